# lavaan reference numbers for tests/test_sem.py (run via tools/make_sem_fixtures.py).
# Usage: Rscript sem_fixtures.R <fixture dir> <dataset name> ...
# For each dataset reads <name>_x.csv (group, x) and <name>_g.csv (group, y, z) and writes
# <name>.json with: the one-factor CFA (default identification, ML, meanstructure),
# regression and Bartlett factor scores and lm(y ~ z + fs) with classical and HC0-HC3 SEs,
# the single-step SEM (loadings fixed 1, equal residual variances, lv ~~ z, y ~ z + lv) and
# the two-level SEM (level 1: x ~~ x; level 2: y ~ z + x; cluster = group; with lavaan's
# default fixed.x = TRUE and with fixed.x = FALSE). Balanced
# datasets get all three; unbalanced ones only the two-level model.
suppressMessages({
  library(lavaan)
  library(sandwich)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]
names <- args[-1]

pe_list <- function(fit) {
  pe <- parameterEstimates(fit)
  lab <- paste0(pe$lhs, pe$op, pe$rhs)
  if (!is.null(pe$level)) lab <- paste0(lab, "@", pe$level)
  list(est = setNames(as.list(pe$est), lab), se = setNames(as.list(pe$se), lab))
}

second_step <- function(y, z, fs) {
  m <- lm(y ~ z + fs)
  out <- list(coef = unname(coef(m)), classical = unname(sqrt(diag(vcov(m)))))
  for (t in c("HC0", "HC1", "HC2", "HC3")) {
    out[[t]] <- unname(sqrt(diag(vcovHC(m, type = t))))
  }
  out
}

for (nm in names) {
  xd <- read.csv(file.path(dir, paste0(nm, "_x.csv")))
  gd <- read.csv(file.path(dir, paste0(nm, "_g.csv")))
  sizes <- as.vector(table(xd$group))
  res <- list(sizes = sizes)
  if (length(unique(sizes)) == 1L) {
    n <- sizes[1]
    wide <- as.data.frame(matrix(xd$x, ncol = n, byrow = TRUE))
    colnames(wide) <- paste0("x", seq_len(n))
    wide$y <- gd$y
    wide$z <- gd$z
    xs <- paste0("x", seq_len(n))

    # one-factor CFA, lavaan's default identification
    cfa_fit <- cfa(paste("lv =~", paste(xs, collapse = " + ")), data = wide[, xs],
                   meanstructure = TRUE)
    pt <- lavInspect(cfa_fit, "est")
    fs_reg <- as.vector(lavPredict(cfa_fit, method = "regression"))
    fs_bart <- as.vector(lavPredict(cfa_fit, method = "Bartlett"))
    res$cfa <- list(
      converged = lavInspect(cfa_fit, "converged"),
      post_check = suppressWarnings(lavInspect(cfa_fit, "post.check")),
      loadings = unname(as.vector(pt$lambda)),
      residual_variances = unname(diag(pt$theta)),
      factor_variance = unname(pt$psi[1, 1]),
      intercepts = unname(as.vector(pt$nu)),
      fx = unname(fitMeasures(cfa_fit, "fmin")),
      scores_regression = fs_reg,
      scores_bartlett = fs_bart,
      ols_regression = second_step(wide$y, wide$z, fs_reg),
      ols_bartlett = second_step(wide$y, wide$z, fs_bart)
    )

    # single-step SEM on the wide data
    sem_model <- paste0(
      "lv =~ ", paste0("1*", xs, collapse = " + "), "\n",
      paste0(xs, " ~~ v*", xs, collapse = "\n"), "\n",
      "lv ~~ z\n",
      "y ~ z + lv\n"
    )
    sem_fit <- sem(sem_model, data = wide, meanstructure = TRUE)
    res$sem <- c(list(converged = lavInspect(sem_fit, "converged"),
                      post_check = suppressWarnings(lavInspect(sem_fit, "post.check")),
                      information = lavInspect(sem_fit, "options")$information[1]),
                 pe_list(sem_fit))
  }

  # two-level SEM on the long data
  long <- merge(xd, gd, by = "group")
  ml_model <- "level: 1\n x ~~ x\nlevel: 2\n y ~ z + x\n"
  ml_fit <- sem(ml_model, data = long, cluster = "group")
  res$sem_2level <- c(list(converged = lavInspect(ml_fit, "converged"),
                           information = lavInspect(ml_fit, "options")$information[1],
                           logl = unname(fitMeasures(ml_fit, "logl"))),
                      pe_list(ml_fit))
  # the same with fixed.x = FALSE (moments of z and the between part of x free)
  ml_free <- sem(ml_model, data = long, cluster = "group", fixed.x = FALSE)
  res$sem_2level_free <- c(list(converged = lavInspect(ml_free, "converged")),
                           pe_list(ml_free))

  writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE),
             file.path(dir, paste0(nm, ".json")))
  cat("wrote", nm, "\n")
}
