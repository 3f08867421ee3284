# Reference output for method "bayes" (micromacro_sim.models.bayes_gibbs, mcmc_diagnostics).
# Usage (run by tools/make_bayes_fixtures.py from the repository root):
#   Rscript tools/r/bayes_stan.R stan <fixture dir> <name> [<name> ...]
#     Reads <dir>/<name>.json (sufficient statistics, Z, y and the prior hyperparameters),
#     compiles the latent covariate model once (xi integrated out), samples it with rstan
#     (NUTS) and writes
#     <dir>/stan_<name>.csv: per parameter the posterior mean, SD, their MCSEs
#     (rstan::monitor), bulk ESS and R-hat, plus the sampler's settings and diagnostics.
#   Rscript tools/r/bayes_stan.R diagnostics <fixture dir>
#     Reads <dir>/diag_draws.csv (columns series, chain, iter, value) and writes
#     <dir>/diag_rstan.csv: rstan 2.21's Rhat, ess_bulk, ess_tail, ess_rfun, mcse_mean,
#     mcse_sd of every series, and the same R-hat and bulk ESS with Blom's rank
#     normalization (r - 3/8) / (S + 1/4) (the article's and package posterior's).
suppressMessages({
  library(rstan)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
mode <- args[1]
dir <- args[2]

# The latent group means are integrated out: per group, (xbar_g, y_g) is bivariate normal
# (built here as a 2 x 2 covariance matrix and passed to multi_normal), and the members'
# deviations from their group mean contribute sigma2^(-(N - G)/2) exp(-SSW / (2 sigma2)).
# This is the same posterior of the parameters as the model with xi, without the funnels
# that a centered xi gives NUTS at low reliability.
model_code <- "
data {
  int<lower=1> G;
  int<lower=1> q;
  vector<lower=1>[G] n;
  real<lower=1> N;
  vector[G] xbar;
  real<lower=0> ssw;
  matrix[G, q] Z;
  vector[G] y;
  real<lower=0> coef_var;
  real<lower=0> gamma_var;
  real sigma2_shape;
  real<lower=0> sigma2_scale;
  real s2e_shape;
  real<lower=0> s2e_scale;
  real tau2_shape;
  real<lower=0> tau2_scale;
}
parameters {
  real b0;
  vector[q] b_z;
  real b_xi;
  real<lower=0> tau2;
  real<lower=0> sigma2;
  real<lower=0> s2e;
  real gamma0;
  vector[q] gamma_z;
}
model {
  vector[G] m = gamma0 + Z * gamma_z;
  vector[G] my = b0 + Z * b_z + b_xi * m;
  // priors: independent normals; IG(shape, scale) written as its log kernel, so that
  // improper choices (shape <= 0 or scale = 0, e.g. flat = IG(-1, 0)) are allowed
  b0 ~ normal(0, sqrt(coef_var));
  b_z ~ normal(0, sqrt(coef_var));
  b_xi ~ normal(0, sqrt(coef_var));
  gamma0 ~ normal(0, sqrt(gamma_var));
  gamma_z ~ normal(0, sqrt(gamma_var));
  target += -(sigma2_shape + 1) * log(sigma2) - sigma2_scale / sigma2;
  target += -(s2e_shape + 1) * log(s2e) - s2e_scale / s2e;
  target += -(tau2_shape + 1) * log(tau2) - tau2_scale / tau2;
  // x_ig = xi_g + nu_ig: the within-group part of sum_i log N(x_ig | xi_g, sigma2)
  target += -0.5 * (N - G) * log(sigma2) - ssw / (2 * sigma2);
  // xbar_g = xi_g + nubar_g, xi_g = m_g + zeta_g, y_g = ... + b_xi xi_g + e_g
  for (g in 1:G) {
    matrix[2, 2] S;
    S[1, 1] = tau2 + sigma2 / n[g];
    S[1, 2] = b_xi * tau2;
    S[2, 1] = S[1, 2];
    S[2, 2] = b_xi * b_xi * tau2 + s2e;
    target += multi_normal_lpdf([xbar[g], y[g]]' | [m[g], my[g]]', S);
  }
}
"

run_stan <- function(names) {
  # Debian's r-cran-bh leaves the Boost headers in /usr/include (libboost-dev)
  boost <- system.file("include", package = "BH")
  if (!nzchar(boost) && dir.exists("/usr/include/boost")) boost <- "/usr/include"
  model <- stan_model(model_code = model_code, model_name = "micromacro_bayes",
                      boost_lib = if (nzchar(boost)) boost else NULL)
  for (name in names) {
    d <- fromJSON(file.path(dir, paste0(name, ".json")))
    s <- d$stan
    G <- length(d$y)
    Z <- if (is.matrix(d$z)) d$z else matrix(unlist(d$z), nrow = G, byrow = TRUE)
    q <- ncol(Z)
    pr <- d$priors
    sdata <- list(G = G, q = q, n = d$n, N = sum(d$n), xbar = d$xsum / d$n, ssw = d$ssw,
                  Z = Z, y = d$y, coef_var = pr$coef_var, gamma_var = pr$gamma_var,
                  sigma2_shape = pr$sigma2_shape, sigma2_scale = pr$sigma2_scale,
                  s2e_shape = pr$s2e_shape, s2e_scale = pr$s2e_scale,
                  tau2_shape = pr$tau2_shape, tau2_scale = pr$tau2_scale)
    fit <- sampling(model, data = sdata, chains = s$chains, iter = s$warmup + s$draws,
                    warmup = s$warmup, seed = s$seed, refresh = 0,
                    control = list(adapt_delta = s$adapt_delta, max_treedepth = 12))
    pars <- c("b0", paste0("b_z[", seq_len(q), "]"), "b_xi", "tau2", "sigma2", "s2e",
              "gamma0", paste0("gamma_z[", seq_len(q), "]"))
    sims <- as.array(fit, pars = pars)
    mon <- monitor(sims, warmup = 0, print = FALSE)
    sp <- get_sampler_params(fit, inc_warmup = FALSE)
    div <- sum(sapply(sp, function(x) sum(x[, "divergent__"])))
    tree <- sum(sapply(sp, function(x) sum(x[, "treedepth__"] >= 12)))
    out <- data.frame(param = pars, mean = mon[, "mean"], sd = mon[, "sd"],
                      mcse_mean = mon[, "se_mean"], mcse_sd = mon[, "MCSE_SD"],
                      ess_bulk = mon[, "Bulk_ESS"], rhat = mon[, "Rhat"],
                      chains = s$chains, warmup = s$warmup, draws = s$draws,
                      divergent = div, max_treedepth_hits = tree)
    write.csv(format(out, digits = 17), file.path(dir, paste0("stan_", name, ".csv")),
              row.names = FALSE, quote = FALSE)
    cat(name, ": done, divergent transitions ", div, "\n", sep = "")
  }
}

run_diagnostics <- function() {
  d <- read.csv(file.path(dir, "diag_draws.csv"))
  blom <- function(x) {
    S <- length(x)
    r <- rank(x, ties.method = "average")
    array(qnorm((r - 3 / 8) / (S + 1 / 4)), dim = dim(x))
  }
  rows <- list()
  for (sname in unique(d$series)) {
    e <- d[d$series == sname, ]
    e <- e[order(e$chain, e$iter), ]
    sims <- matrix(e$value, ncol = length(unique(e$chain)))
    folded <- abs(sims - median(sims))
    rows[[length(rows) + 1]] <- data.frame(
      series = sname,
      rhat = rstan::Rhat(sims),
      ess_bulk = rstan::ess_bulk(sims),
      ess_tail = rstan::ess_tail(sims),
      ess_basic = rstan:::ess_rfun(sims),
      rhat_basic = rstan:::rhat_rfun(sims),
      mcse_mean = rstan:::mcse_mean(sims),
      mcse_sd = rstan:::mcse_sd(sims),
      rhat_blom = max(rstan:::rhat_rfun(blom(rstan:::split_chains(sims))),
                      rstan:::rhat_rfun(blom(rstan:::split_chains(folded)))),
      ess_bulk_blom = rstan:::ess_rfun(blom(rstan:::split_chains(sims)))
    )
  }
  out <- do.call(rbind, rows)
  write.csv(format(out, digits = 17), file.path(dir, "diag_rstan.csv"), row.names = FALSE,
            quote = FALSE)
}

if (mode == "stan") {
  run_stan(args[-(1:2)])
} else if (mode == "diagnostics") {
  run_diagnostics()
} else {
  stop("mode must be 'stan' or 'diagnostics'")
}
