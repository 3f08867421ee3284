# Reference output for method "tspa" (micromacro_sim.models.tspa): the stage-2 model of
# two-stage path analysis fitted by OpenMx with the per-group error variance as a
# definition variable (Lai & Hsiao, 2022; R2spa's tspa_mx_model() builds the same model).
# Usage (run by tools/make_tspa_fixtures.py from the repository root):
#   Rscript tools/r/tspa_openmx.R <fixture dir> <name> [<name> ...]
#     Reads <dir>/<name>.csv (columns s, ev, z1[, z2 ...], y: one row per group) and writes
#     <dir>/openmx_<name>.json: OpenMx's estimates, standard errors (from the Hessian of
#     -2 log L), -2 log L, status code and the gradient at the solution.
# Model (likelihood of (s, y) given z; z and ev enter as definition variables):
#   s = eta + u, Var(u) = ev;  eta = a + z'gamma + zeta, Var(zeta) = psi
#   y = b0 + z'b_z + b_xi eta + e, Var(e) = s2e
suppressMessages({
  library(OpenMx)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]
names <- args[-1]
mxOption(NULL, "Default optimizer", "SLSQP")
mxOption(NULL, "Optimality tolerance", "1e-14")
mxOption(NULL, "Feasibility tolerance", "1e-10")

fit_one <- function(dat) {
  zn <- grep("^z", names(dat), value = TRUE)
  q <- length(zn)
  v_s <- var(dat$s)
  start_psi <- max(v_s - mean(dat$ev), 0.2 * v_s)
  model <- mxModel(
    "tspa",
    mxData(dat, type = "raw"),
    mxMatrix("Full", 1, 1, free = TRUE, values = mean(dat$s), labels = "a", name = "A"),
    mxMatrix("Full", q, 1, free = TRUE, values = 0, labels = paste0("gamma_", zn),
             name = "Gam"),
    mxMatrix("Full", 1, 1, free = TRUE, values = start_psi, labels = "psi", name = "Psi"),
    mxMatrix("Full", 1, 1, free = TRUE, values = mean(dat$y), labels = "b0", name = "B0"),
    mxMatrix("Full", q, 1, free = TRUE, values = 0, labels = paste0("b_", zn), name = "Bz"),
    mxMatrix("Full", 1, 1, free = TRUE, values = 0, labels = "b_xi", name = "Bxi"),
    mxMatrix("Full", 1, 1, free = TRUE, values = var(dat$y), labels = "s2e", name = "S2e"),
    mxMatrix("Full", 1, q, free = FALSE, labels = paste0("data.", zn), name = "Zd"),
    mxMatrix("Full", 1, 1, free = FALSE, labels = "data.ev", name = "Ev"),
    mxAlgebra(A + Zd %*% Gam, name = "MuEta"),
    mxAlgebra(cbind(MuEta, B0 + Zd %*% Bz + Bxi %*% MuEta), name = "expMean",
              dimnames = list(NULL, c("s", "y"))),
    mxAlgebra(rbind(cbind(Psi + Ev, Bxi * Psi), cbind(Bxi * Psi, Bxi * Bxi * Psi + S2e)),
              name = "expCov", dimnames = list(c("s", "y"), c("s", "y"))),
    mxExpectationNormal(covariance = "expCov", means = "expMean",
                        dimnames = c("s", "y")),
    mxFitFunctionML()
  )
  fit <- mxRun(model, silent = TRUE, suppressWarnings = TRUE)
  est <- omxGetParameters(fit)
  se <- fit$output$standardErrors[, 1]
  list(estimates = as.list(est), se = as.list(se[names(est)]),
       minus2ll = fit$output$Minus2LogLikelihood, status = fit$output$status$code,
       max_abs_gradient = max(abs(fit$output$gradient)),
       openmx = as.character(packageVersion("OpenMx")))
}

for (nm in names) {
  dat <- read.csv(file.path(dir, paste0(nm, ".csv")))
  out <- fit_one(dat)
  write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE),
        file.path(dir, paste0("openmx_", nm, ".json")))
}
