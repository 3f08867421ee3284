# lavaan FIML reference output for tests/test_fiml_lavaan.py (run via
# tools/make_fiml_fixtures.py).
# Usage: Rscript tools/r/fiml_fixtures.R <fixture dir> <name> [<name> ...]
# Reads <dir>/<name>_wide.csv (x1..xK with NA for absent members, y, z1..zq) and writes
#   <dir>/<name>_lavaan.csv    method, lhs, op, rhs, est, se: parameterEstimates() of every
#                              fit, and the lm() coefficients with classical SEs of the
#                              second steps (methods zcond_lm, cfa_lm_regression,
#                              cfa_lm_bartlett; rhs "(Intercept)", z1.., "fs");
#   <dir>/<name>_verdicts.csv  method, fitted, converged, post_check, information,
#                              logl (fitMeasures; NA where lavaan has none), warnings,
#                              error (every warning and error is caught);
#   <dir>/<name>_scores.csv    lavPredict() scores: zcond (regression), cfa_regression,
#                              cfa_bartlett (NA when the fit failed).
# Fits (models as in tools/r/fsr_fixtures.R and tools/r/sem_fixtures.R):
#   sem    lv =~ 1*x1 + ...; x1 ~~ v*x1 ...; y ~ z + lv; lv ~~ z; z1 ~~ z2 ...
#          meanstructure = TRUE, missing = "fiml"
#   zcond  lv =~ 1*x1 + ...; x1 ~~ v*x1 ...; lv ~ z, missing = "fiml"; regression scores
#   cfa    lv =~ x1 + ... + xK (first loading 1), meanstructure = TRUE, missing = "fiml";
#          regression and Bartlett scores
#   sam    the sem model by sam(sam.method = "local", missing = "ml")
#   sam_em the same with em.h1.iter.max = 20000, em.h1.tol = 1e-10: local SAM takes its
#          moments from the EM estimate of the saturated model, which lavaan's defaults
#          (500 iterations, tolerance 1e-5) leave unconverged on sparse member positions
suppressMessages(library(lavaan))

args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]

# run expr, collecting its warnings; an error gives list(error = message)
caught <- function(expr) {
  warns <- character(0)
  # lavaan prints its data summary before some errors: keep it off the console
  utils::capture.output(value <- withCallingHandlers(
    tryCatch(expr, error = function(e) list(error = conditionMessage(e))),
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    }
  ))
  list(value = value, warnings = warns)
}

squash <- function(txt) {
  txt <- gsub("\\s+", " ", trimws(txt))
  paste(unique(txt), collapse = " | ")
}

failed <- function(value) is.list(value) && !is.null(value$error) && !is(value, "lavaan")

verdict <- function(method, res) {
  v <- res$value
  if (failed(v)) {
    return(data.frame(method = method, fitted = FALSE, converged = NA, post_check = NA,
                      information = NA, logl = NA, warnings = squash(res$warnings),
                      error = squash(v$error)))
  }
  pc <- caught(lavInspect(v, "post.check"))
  post <- if (failed(pc$value)) NA else isTRUE(pc$value)
  ll <- caught(fitMeasures(v, "logl"))
  logl <- if (failed(ll$value)) NA else sprintf("%.17g", unname(ll$value))
  data.frame(method = method, fitted = TRUE, converged = lavInspect(v, "converged"),
             post_check = post, information = lavInspect(v, "options")$information[1],
             logl = logl, warnings = squash(c(res$warnings, pc$warnings)), error = "")
}

estimates <- function(method, res) {
  if (failed(res$value)) return(NULL)
  pe <- parameterEstimates(res$value)
  data.frame(method = method, lhs = pe$lhs, op = pe$op, rhs = pe$rhs, est = pe$est,
             se = pe$se)
}

second_step <- function(method, d, zs, fs) {
  if (is.null(fs)) return(NULL)
  d$fs <- fs
  fm <- lm(as.formula(paste("y ~", paste(c(zs, "fs"), collapse = " + "))), data = d)
  cf <- summary(fm)$coefficients
  data.frame(method = method, lhs = "y", op = "~", rhs = rownames(cf), est = cf[, 1],
             se = cf[, 2])
}

scores <- function(res, how, G) {
  if (failed(res$value)) return(NULL)
  s <- caught(lavPredict(res$value, method = how))
  if (failed(s$value) || length(s$value) != G) return(NULL)
  as.numeric(s$value)
}

for (name in args[-1]) {
  d <- read.csv(file.path(dir, paste0(name, "_wide.csv")))
  G <- nrow(d)
  xs <- grep("^x[0-9]+$", names(d), value = TRUE)
  zs <- grep("^z[0-9]+$", names(d), value = TRUE)
  meas <- paste0("lv =~ ", paste0("1*", xs, collapse = " + "), "\n",
                 paste0(xs, " ~~ v*", xs, collapse = "\n"), "\n")
  struc <- paste0("y ~ ", paste(c(zs, "lv"), collapse = " + "), "\n",
                  paste0("lv ~~ ", zs, collapse = "\n"), "\n",
                  if (length(zs) > 1) paste0(combn(zs, 2, paste, collapse = " ~~ "),
                                             collapse = "\n") else "",
                  "\n")
  fits <- list(
    sem = caught(sem(paste0(meas, struc), data = d, meanstructure = TRUE,
                     missing = "fiml")),
    zcond = caught(sem(paste0(meas, "lv ~ ", paste(zs, collapse = " + "), "\n"), data = d,
                       missing = "fiml")),
    cfa = caught(cfa(paste("lv =~", paste(xs, collapse = " + ")), data = d,
                     meanstructure = TRUE, missing = "fiml")),
    sam = caught(sam(paste0(meas, struc), data = d, sam.method = "local", missing = "ml")),
    sam_em = caught(sam(paste0(meas, struc), data = d, sam.method = "local", missing = "ml",
                        em.h1.iter.max = 20000L, em.h1.tol = 1e-10))
  )
  fs <- list(zcond = scores(fits$zcond, "regression", G),
             cfa_regression = scores(fits$cfa, "regression", G),
             cfa_bartlett = scores(fits$cfa, "Bartlett", G))

  out <- do.call(rbind, c(
    lapply(names(fits), function(m) estimates(m, fits[[m]])),
    list(second_step("zcond_lm", d, zs, fs$zcond),
         second_step("cfa_lm_regression", d, zs, fs$cfa_regression),
         second_step("cfa_lm_bartlett", d, zs, fs$cfa_bartlett))
  ))
  if (is.null(out)) {
    out <- data.frame(method = character(0), lhs = character(0), op = character(0),
                      rhs = character(0), est = numeric(0), se = numeric(0))
  }
  write.csv(out, file.path(dir, paste0(name, "_lavaan.csv")), row.names = FALSE)
  verdicts <- do.call(rbind, lapply(names(fits), function(m) verdict(m, fits[[m]])))
  write.csv(verdicts, file.path(dir, paste0(name, "_verdicts.csv")), row.names = FALSE)
  fmt <- function(v) if (is.null(v)) rep("NA", G) else sprintf("%.17g", v)
  write.csv(data.frame(zcond = fmt(fs$zcond), cfa_regression = fmt(fs$cfa_regression),
                       cfa_bartlett = fmt(fs$cfa_bartlett)),
            file.path(dir, paste0(name, "_scores.csv")), row.names = FALSE, quote = FALSE)
  cat("wrote", name, "\n")
}
