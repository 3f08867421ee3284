# Reference numbers for tests/test_demo.py (SPEC section 6): lavaan CFA with equal loadings and
# equal residual variances, and lme4 `value ~ -1 + item + (1 | id)` by ML, on the shipped BFI
# agreeableness items (complete cases, A1 negated).
# Usage (from the repository root): Rscript tools/r/bfi_fixture.R
suppressPackageStartupMessages({library(lavaan); library(lme4); library(jsonlite)})
d <- read.csv("micromacro_sim/data/bfi_agreeableness.csv")
d <- d[complete.cases(d), ]
d$A1 <- -d$A1
items <- c("A1", "A2", "A3", "A4", "A5")
model <- '
agree =~ a*A1 + a*A2 + a*A3 + a*A4 + a*A5
A1 ~~ var*A1
A2 ~~ var*A2
A3 ~~ var*A3
A4 ~~ var*A4
A5 ~~ var*A5
'
fit <- cfa(model, data = d[, items], meanstructure = TRUE)
pe <- parameterEstimates(fit)
ints <- pe[pe$op == "~1" & pe$lhs %in% items, ]
resv <- pe[pe$op == "~~" & pe$lhs == "A1" & pe$rhs == "A1", ]
phi <- pe[pe$op == "~~" & pe$lhs == "agree", ]
fm <- fitMeasures(fit, c("chisq", "df", "logl", "unrestricted.logl"))
fs <- lavPredict(fit, method = "regression")[, 1]
long <- reshape(d, direction = "long", varying = items, v.names = "value", timevar = "item",
                times = items, idvar = "id")
mm <- lmer(value ~ -1 + item + (1 | id), data = long, REML = FALSE)
vc <- as.data.frame(VarCorr(mm))
re <- ranef(mm)$id[as.character(d$id), 1]
out <- list(
  software = list(R = R.version.string, lavaan = as.character(packageVersion("lavaan")),
                  lme4 = as.character(packageVersion("lme4"))),
  n = nrow(d),
  lavaan = list(intercepts = ints$est, intercept_se = ints$se,
                residual_variance = resv$est, residual_variance_se = resv$se,
                factor_variance = phi$est, factor_variance_se = phi$se,
                chisq = unname(fm["chisq"]), df = unname(fm["df"]), logl = unname(fm["logl"]),
                unrestricted_logl = unname(fm["unrestricted.logl"]),
                scores_head = unname(fs[1:10]), scores_sum = sum(fs), scores_sumsq = sum(fs^2)),
  lme4 = list(fixef = unname(fixef(mm)), fixef_se = unname(sqrt(diag(as.matrix(vcov(mm))))),
              id_variance = vc$vcov[vc$grp == "id"], residual_variance = vc$vcov[vc$grp == "Residual"],
              logl = as.numeric(logLik(mm)),
              ranef_head = re[1:10], ranef_sum = sum(re), ranef_sumsq = sum(re^2),
              max_abs_ranef_minus_scores = max(abs(re - fs)))
)
write(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/fixtures/bfi/reference.json")
