# lavaan reference output for local SAM on data with absent members (missing = "ml").
# Usage: Rscript tools/r/sam_fiml_check.R <fixture dir> <name> [<name> ...]
# Reads <dir>/<name>.csv (wide: x1..xK with NA for absent members, y, z1..zq) and writes
#   <dir>/<name>_lavaan.csv  method, lhs, op, rhs, est, se (parameter estimates and the
#                            intermediate quantities of each sam() run, see `extras`)
#   <dir>/<name>_status.csv  method, status (ok / error), message (warnings or the error)
# Methods: sam (all defaults: observed information, standard bounds), sam_expected
# (information = "expected"), sam_none (measurement step without bounds), sam_none_expected,
# and sem (the full FIML SEM of the same model).
suppressMessages(library(lavaan))
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]

model_syntax <- function(xs, zs) {
  meas <- paste0("lv =~ ", paste0("1*", xs, collapse = " + "), "\n",
                 paste0(xs, " ~~ v*", xs, collapse = "\n"), "\n")
  struc <- paste0("y ~ ", paste(c(zs, "lv"), collapse = " + "), "\n",
                  paste0("lv ~~ ", zs, collapse = "\n"), "\n",
                  if (length(zs) > 1) paste0(combn(zs, 2, paste, collapse = " ~~ "),
                                             collapse = "\n") else "", "\n")
  paste0(meas, struc)
}

# run an expression, collecting warnings; list(value, status, message)
capture <- function(expr) {
  msgs <- character(0)
  value <- NULL
  # lavaan prints its variable table before some errors: keep it out of the output
  invisible(utils::capture.output(value <- withCallingHandlers(
    tryCatch(expr, error = function(e) {
      msgs <<- c(msgs, conditionMessage(e))
      NULL
    }),
    warning = function(w) {
      msgs <<- c(msgs, conditionMessage(w))
      invokeRestart("muffleWarning")
    })))
  msg <- gsub("[[:space:]]+", " ", paste(msgs, collapse = " | "))
  list(value = value, status = if (is.null(value)) "error" else "ok", message = msg)
}

row <- function(method, lhs, op, rhs, est, se = NA_real_) {
  data.frame(method = method, lhs = lhs, op = op, rhs = rhs, est = est, se = se)
}

params <- function(fit, method, xs) {
  pe <- parameterEstimates(fit)
  pe <- pe[pe$op %in% c("~", "~~", "~1") & !(pe$lhs %in% xs), ]
  row(method, pe$lhs, pe$op, pe$rhs, pe$est, pe$se)
}

# intermediate quantities of a local SAM run (output = "list" repeats the same steps)
extras <- function(out, method, xs) {
  mm <- out$MM.FIT[[1]]
  pt <- parameterEstimates(mm)
  v <- pt$est[pt$lhs == xs[1] & pt$op == "~~" & pt$rhs == xs[1]]
  psi <- pt$est[pt$lhs == "lv" & pt$op == "~~" & pt$rhs == "lv"]
  nu <- pt$est[pt$lhs %in% xs & pt$op == "~1"]
  veta <- out$VETA[[1]]
  nm <- rownames(veta)
  ij <- which(lower.tri(veta, diag = TRUE), arr.ind = TRUE)
  # the bounds lavaan put on the measurement fit (none without bounds)
  ptm <- mm@ParTable
  upper <- if (is.null(ptm$upper)) rep(NA_real_, length(ptm$lhs)) else ptm$upper
  v_idx <- which(ptm$lhs == xs[1] & ptm$op == "~~" & ptm$rhs == xs[1])
  psi_idx <- which(ptm$lhs == "lv" & ptm$op == "~~" & ptm$rhs == "lv")
  rbind(
    row(method, "mm", "v", "", v),
    row(method, "mm", "psi", "", psi),
    row(method, "mm", "nu", xs, nu),
    row(method, "mm", "v_upper", "", upper[v_idx]),
    row(method, "mm", "psi_upper", "", upper[psi_idx]),
    row(method, "lambda", "", "", out$lambda[[1]]),
    row(method, "veta", "~~", paste(nm[ij[, 1]], nm[ij[, 2]]), veta[ij]),
    row(method, "eeta", "~1", nm, as.numeric(out$EETA[[1]]))
  )
}

for (name in args[-1]) {
  d <- read.csv(file.path(dir, paste0(name, ".csv")))
  xs <- grep("^x[0-9]+$", names(d), value = TRUE)
  zs <- grep("^z[0-9]+$", names(d), value = TRUE)
  model <- model_syntax(xs, zs)
  runs <- list(
    sam = list(),
    sam_expected = list(information = "expected"),
    sam_none = list(mm.args = list(bounds = "none", se = "standard")),
    sam_none_expected = list(mm.args = list(bounds = "none", se = "standard"),
                             information = "expected")
  )
  out <- NULL
  status <- NULL
  for (method in names(runs)) {
    call_args <- c(list(model = model, data = d, sam.method = "local", missing = "ml"),
                   runs[[method]])
    fit <- capture(do.call(sam, call_args))
    status <- rbind(status, data.frame(method = method, status = fit$status,
                                       message = fit$message))
    if (fit$status == "ok") {
      lst <- suppressWarnings(do.call(sam, c(call_args, list(output = "list"))))
      out <- rbind(out, params(fit$value, method, xs), extras(lst, method, xs))
      if (method == "sam") {
        h1 <- fit$value@SampleStats@missing.h1[[1]]
        vn <- lavNames(fit$value)
        ij <- which(lower.tri(h1$sigma, diag = TRUE), arr.ind = TRUE)
        out <- rbind(out,
                     row("h1", vn, "~1", "", h1$mu),
                     row("h1", vn[ij[, 1]], "~~", vn[ij[, 2]], h1$sigma[ij]))
      }
    }
  }
  fit <- capture(sem(model, data = d, missing = "ml"))
  status <- rbind(status, data.frame(method = "sem", status = fit$status, message = fit$message))
  if (fit$status == "ok") out <- rbind(out, params(fit$value, "sem", xs))
  if (is.null(out)) out <- row("none", "", "", "", NA_real_)[0, ]
  write.csv(out, file.path(dir, paste0(name, "_lavaan.csv")), row.names = FALSE)
  write.csv(status, file.path(dir, paste0(name, "_status.csv")), row.names = FALSE)
}
