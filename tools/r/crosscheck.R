# R peers of every method, for tools/crosscheck_r.py.
# Usage: Rscript tools/r/crosscheck.R LONG.csv OUT_PREFIX
# LONG.csv: dataset, group, member, x, y, z1..zq, xi, croon (one row per person; croon is
# the package's adjusted group mean, NA where it has none). Writes OUT_PREFIX_est.csv
# (dataset, method, term, kind, value; kind = est, classical, HC0..HC3) and
# OUT_PREFIX_accept.csv (dataset, method, converged, post_check, accepted, note).
# Each peer is the call named in the README's Methods table (the calls of the other
# fixture scripts in tools/r/): lm + sandwich::vcovHC, lme4::lmer + ranef, glmmTMB,
# lavaan::cfa / sem / sam and two-level sem.
suppressPackageStartupMessages({
  library(lavaan)
  library(lme4)
  library(glmmTMB)
  library(sandwich)
})

args <- commandArgs(trailingOnly = TRUE)
long_all <- read.csv(args[1])
prefix <- args[2]
est_rows <- list()
acc_rows <- list()

add_est <- function(ds, method, terms, kind, values) {
  est_rows[[length(est_rows) + 1]] <<- data.frame(dataset = ds, method = method, term = terms,
                                                  kind = kind, value = unname(values))
}
add_acc <- function(ds, method, converged, post_check, note = "") {
  acc_rows[[length(acc_rows) + 1]] <<- data.frame(
    dataset = ds, method = method, converged = isTRUE(converged),
    post_check = isTRUE(post_check), accepted = isTRUE(converged) && isTRUE(post_check),
    note = gsub("[\r\n,]", " ", note))
}

# lm(y ~ z + score), classical and HC0-HC3 SEs, terms named as the package names them
second_step <- function(ds, method, g, zs, score) {
  d <- data.frame(g[, c("y", zs), drop = FALSE], score = score)
  m <- lm(as.formula(paste("y ~", paste(c(zs, "score"), collapse = " + "))), data = d)
  terms <- c("intercept", zs, "x")
  add_est(ds, method, terms, "est", coef(m))
  if (anyNA(coef(m))) return(invisible())  # aliased score (constant): no SEs
  add_est(ds, method, terms, "classical", sqrt(diag(vcov(m))))
  for (t in c("HC0", "HC1", "HC2", "HC3")) {
    add_est(ds, method, terms, t, sqrt(diag(vcovHC(m, type = t))))
  }
}

# run expr; on error or warning keep the value and the message
guarded <- function(expr) {
  msgs <- character(0)
  val <- withCallingHandlers(
    tryCatch(expr, error = function(e) {
      msgs <<- c(msgs, conditionMessage(e))
      NULL
    }),
    warning = function(w) {
      msgs <<- c(msgs, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  list(value = val, note = paste(msgs, collapse = "; "))
}

lav_ok <- function(fit) {
  c(converged = isTRUE(lavInspect(fit, "converged")),
    post_check = isTRUE(suppressWarnings(lavInspect(fit, "post.check"))))
}

# one-step lavaan fit: structural coefficients of y, SEs normal-theory ("classical")
lav_structural <- function(ds, method, fit, labels, terms) {
  pe <- parameterEstimates(fit)
  lab <- paste0(pe$lhs, pe$op, pe$rhs)
  if (!is.null(pe$level)) lab <- paste0(lab, "@", pe$level)
  i <- match(labels, lab)
  add_est(ds, method, terms, "est", pe$est[i])
  add_est(ds, method, terms, "classical", pe$se[i])
}

tight_lmer <- lmerControl(
  optimizer = "nloptwrap",
  optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-15, xtol_rel = 1e-14, ftol_rel = 1e-15,
                 maxeval = 1e5)
)

fit_blup <- function(ds, method, d, g, zs, reml) {
  r <- guarded(lmer(x ~ 1 + (1 | group), data = d, REML = reml, control = tight_lmer))
  fit <- r$value
  if (is.null(fit)) return(add_acc(ds, method, FALSE, FALSE, r$note))
  msgs <- fit@optinfo$conv$lme4$messages
  add_acc(ds, method, length(msgs) == 0, !isSingular(fit),
          paste(c(r$note, msgs, if (isSingular(fit)) "singular"), collapse = "; "))
  u <- ranef(fit)$group[as.character(g$group), "(Intercept)"]
  second_step(ds, method, g, zs, u)
}

fit_hetvar <- function(ds, d, g, zs) {
  d$item <- factor(d$member)
  r <- guarded(glmmTMB(x ~ (1 | group) + diag(0 + item | group), data = d))
  fit <- r$value
  if (is.null(fit)) return(add_acc(ds, "blup_hetvar", FALSE, FALSE, r$note))
  # The call's residual variance and per-item variances are not separately identified
  # (only their sums s2_j are), so the Hessian is singular by construction and pdHess is
  # no check; the check is that no identified variance (tau2, s2_j) is at zero.
  vc <- VarCorr(fit)$cond
  tau2 <- unname(vc$group[1, 1])
  s2 <- unname(attr(vc$group.1, "stddev")^2) + sigma(fit)^2
  total <- tau2 + mean(s2)
  interior <- tau2 >= 1e-6 * total && all(s2 >= 1e-6 * total)
  add_acc(ds, "blup_hetvar", fit$fit$convergence == 0, interior,
          paste0(if (!isTRUE(fit$sdr$pdHess)) "pdHess FALSE; ", r$note))
  u <- ranef(fit)$cond$group[as.character(g$group), "(Intercept)"]
  second_step(ds, "blup_hetvar", g, zs, u)
}

fit_wide <- function(ds, d, g, zs) {
  n <- max(d$member) + 1
  d <- d[order(d$group, d$member), ]
  xs <- paste0("x", seq_len(n))
  wide <- as.data.frame(matrix(d$x, ncol = n, byrow = TRUE))
  colnames(wide) <- xs
  wide <- cbind(wide, g[, c("y", zs), drop = FALSE])
  meas <- paste0("lv =~ ", paste0("1*", xs, collapse = " + "), "\n",
                 paste0(xs, " ~~ v*", xs, collapse = "\n"), "\n")
  zcov <- if (length(zs) > 1) paste0(combn(zs, 2, paste, collapse = " ~~ "), collapse = "\n")
  struc <- paste0("y ~ ", paste(c(zs, "lv"), collapse = " + "), "\n",
                  paste0("lv ~~ ", zs, collapse = "\n"), "\n", paste(zcov, collapse = ""), "\n")
  slopes <- c(paste0("y~", zs), "y~lv")

  # factor_score: one-factor CFA, default identification, meanstructure, regression scores
  r <- guarded(cfa(paste("lv =~", paste(xs, collapse = " + ")), data = wide[, xs],
                   meanstructure = TRUE))
  if (is.null(r$value)) {
    add_acc(ds, "factor_score", FALSE, FALSE, r$note)
  } else {
    ok <- lav_ok(r$value)
    add_acc(ds, "factor_score", ok[1], ok[2], r$note)
    second_step(ds, "factor_score", g, zs,
                as.vector(lavPredict(r$value, method = "regression")))
  }
  # sem: loadings 1 (the same model as equal labelled loadings with the first fixed at 1)
  r <- guarded(sem(paste0(meas, struc), data = wide, meanstructure = TRUE))
  if (is.null(r$value)) {
    add_acc(ds, "sem", FALSE, FALSE, r$note)
  } else {
    ok <- lav_ok(r$value)
    add_acc(ds, "sem", ok[1], ok[2], r$note)
    lav_structural(ds, "sem", r$value, c("y~1", slopes), c("intercept", zs, "x"))
  }
  # sam: local SAM, every option at its default (no intercept in lavaan 0.6.14)
  r <- guarded(sam(paste0(meas, struc), data = wide, sam.method = "local"))
  if (is.null(r$value)) {
    add_acc(ds, "sam", FALSE, FALSE, r$note)
  } else {
    ok <- lav_ok(r$value)
    add_acc(ds, "sam", ok[1], ok[2], r$note)
    lav_structural(ds, "sam", r$value, slopes, c(zs, "x"))
  }
  # zcond_score: lv ~ z measurement model, regression scores, lm
  r <- guarded(sem(paste0(meas, "lv ~ ", paste(zs, collapse = " + "), "\n"), data = wide))
  if (is.null(r$value)) {
    add_acc(ds, "zcond_score", FALSE, FALSE, r$note)
  } else {
    ok <- lav_ok(r$value)
    add_acc(ds, "zcond_score", ok[1], ok[2], r$note)
    # lavaan fixes the latent intercept at 0; the package's scores are the same up to a
    # constant, on the x scale (their mean is the grand mean of x): shift lavaan's
    fs <- as.vector(lavPredict(r$value, method = "regression"))
    second_step(ds, "zcond_score", g, zs, fs - mean(fs) + mean(d$x))
  }
}

fit_2level <- function(ds, d, zs) {
  model <- paste0("level: 1\n x ~~ x\nlevel: 2\n y ~ ", paste(c(zs, "x"), collapse = " + "), "\n")
  labels <- c("y~1@2", paste0("y~", zs, "@2"), "y~x@2")
  for (fx in c(FALSE, TRUE)) {
    method <- if (fx) "sem_2level_fx" else "sem_2level"
    r <- guarded(sem(model, data = d, cluster = "group", fixed.x = fx))
    if (is.null(r$value)) {
      add_acc(ds, method, FALSE, FALSE, r$note)
      next
    }
    ok <- lav_ok(r$value)
    add_acc(ds, method, ok[1], ok[2], r$note)
    lav_structural(ds, method, r$value, labels, c("intercept", zs, "x"))
  }
}

for (ds in unique(long_all$dataset)) {
  d <- long_all[long_all$dataset == ds, ]
  d <- d[order(d$group, d$member), ]
  d_raw <- d
  zs <- grep("^z[0-9]+$", names(d), value = TRUE)
  zs <- zs[colSums(!is.na(d[, zs, drop = FALSE])) > 0]  # designs with fewer z leave NA
  g <- d[!duplicated(d$group), c("group", "y", zs, "xi", "croon")]
  second_step(ds, "true", g, zs, g$xi)
  add_acc(ds, "true", TRUE, TRUE)
  second_step(ds, "unadjusted", g, zs, tapply(d$x, d$group, mean)[as.character(g$group)])
  add_acc(ds, "unadjusted", TRUE, TRUE)
  if (all(is.finite(g$croon))) {
    second_step(ds, "croon", g, zs, g$croon)
    add_acc(ds, "croon", TRUE, TRUE, "second step only, on the package's adjusted means")
  } else {
    add_acc(ds, "croon", FALSE, FALSE, "no adjusted means from the package")
  }
  d$group <- factor(d$group)
  fit_blup(ds, "blup", d, g, zs, TRUE)
  fit_blup(ds, "blup_ml", d, g, zs, FALSE)
  fit_hetvar(ds, d, g, zs)
  if (length(unique(table(d$group))) == 1L) fit_wide(ds, d_raw, g, zs)
  fit_2level(ds, d, zs)
}

write.csv(do.call(rbind, est_rows), paste0(prefix, "_est.csv"), row.names = FALSE)
write.csv(do.call(rbind, acc_rows), paste0(prefix, "_accept.csv"), row.names = FALSE)
