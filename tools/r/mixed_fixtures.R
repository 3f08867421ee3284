# Reference numbers for tests/test_mixed.py: lme4 (REML and ML) and glmmTMB fits of the
# first-step mixed models, their conditional modes, and the second-step lm of y ~ z + score
# with classical and sandwich::vcovHC HC0-HC3 standard errors.
#
# Usage: Rscript tools/r/mixed_fixtures.R <dir> <name> [<name> ...]
# Reads <dir>/<name>.csv (long: group, member, x, y, z) and writes <dir>/<name>.json.
# Called by tools/make_mixed_fixtures.py.

suppressPackageStartupMessages({
  library(lme4)
  library(glmmTMB)
  library(sandwich)
  library(jsonlite)
})

args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]
names <- args[-1]

second_step <- function(groups, score) {
  fit <- lm(y ~ z + score, data = data.frame(groups, score = score))
  se <- list(classical = unname(sqrt(diag(vcov(fit)))))
  for (type in c("HC0", "HC1", "HC2", "HC3")) {
    se[[type]] <- unname(sqrt(diag(vcovHC(fit, type = type))))
  }
  list(coef = unname(coef(fit)), se = se)
}

# Tight optimizer tolerances so the reference is the optimum, not the optimizer's stop.
tight_lmer <- lmerControl(
  optimizer = "nloptwrap",
  optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-15, xtol_rel = 1e-14, ftol_rel = 1e-15,
                 maxeval = 1e5)
)

fit_lmer <- function(d, groups, reml, control) {
  fit <- lmer(x ~ 1 + (1 | group), data = d, REML = reml, control = control)
  vc <- as.data.frame(VarCorr(fit))
  re <- ranef(fit)$group
  u <- re[as.character(groups$group), "(Intercept)"]
  out <- list(
    tau2 = vc$vcov[vc$grp == "group"],
    sigma2 = vc$vcov[vc$grp == "Residual"],
    mu = unname(fixef(fit)[1]),
    loglik = as.numeric(logLik(fit)),
    singular = isSingular(fit),
    ranef = u
  )
  if (out$tau2 > 0) out$lm <- second_step(groups, u)
  out
}

fit_glmmtmb <- function(d, groups) {
  d$item <- factor(d$member)
  fit <- suppressWarnings(glmmTMB(x ~ (1 | group) + diag(0 + item | group), data = d))
  vc <- VarCorr(fit)$cond
  item_var <- unname(attr(vc$group.1, "stddev")^2)
  sigma2 <- sigma(fit)^2
  re <- ranef(fit)$cond$group
  u <- re[as.character(groups$group), "(Intercept)"]
  list(
    tau2 = unname(vc$group[1, 1]),
    item_var = item_var,
    sigma2 = sigma2,
    s2 = item_var + sigma2,
    mu = unname(fixef(fit)$cond[1]),
    loglik = -fit$fit$objective,
    convergence = fit$fit$convergence,
    pdHess = fit$sdr$pdHess,
    ranef = u,
    lm = second_step(groups, u)
  )
}

for (name in names) {
  d <- read.csv(file.path(dir, paste0(name, ".csv")))
  groups <- d[!duplicated(d$group), c("group", "y", "z")]
  groups <- groups[order(groups$group), ]
  d$group <- factor(d$group)
  out <- list(
    name = name,
    lmer_reml = fit_lmer(d, groups, TRUE, tight_lmer),
    lmer_ml = fit_lmer(d, groups, FALSE, tight_lmer),
    lmer_reml_default = fit_lmer(d, groups, TRUE, lmerControl())[c("tau2", "sigma2", "mu")],
    unadjusted = second_step(groups, tapply(d$x, d$group, mean)[as.character(groups$group)])
  )
  out$glmmtmb <- tryCatch(fit_glmmtmb(d, groups), error = function(e) conditionMessage(e))
  out$versions <- list(
    R = paste(R.version$major, R.version$minor, sep = "."),
    lme4 = as.character(packageVersion("lme4")),
    glmmTMB = as.character(packageVersion("glmmTMB")),
    sandwich = as.character(packageVersion("sandwich"))
  )
  writeLines(toJSON(out, digits = I(15), auto_unbox = TRUE, pretty = FALSE),
             file.path(dir, paste0(name, ".json")))
  cat("wrote", name, "\n")
}
