# lavaan's full-information ML fit of the one-factor CFA on wide data with missing cells,
# for every dataset of one CSV (the fixture of tests/test_cfa_fiml.py; run
# `python tests/test_cfa_fiml.py` from the repository root to rebuild it).
# Usage: Rscript cfa_fiml_check.R <input csv> <fits csv> <scores csv>
# The input has columns dataset, K, group, x1..xn (NA where a member is absent; columns
# beyond the dataset's K are all NA). For each dataset (its checksum sum_x, the sum of
# the observed values, guards that the test redraws the same data) this fits
#   cfa('lv =~ x1 + ... + xK', data, meanstructure = TRUE, missing = "fiml")
# and records lavInspect(fit, "converged"), lavInspect(fit, "post.check"), the log-
# likelihood, fmin, the optimizer's iterations and largest absolute gradient element, the
# estimates (lambda_j, theta_j, psi, nu_j), and the scores of lavPredict(fit, method =
# "regression") and lavPredict(fit, method = "Bartlett") per group.
suppressMessages(library(lavaan))

args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
kmax <- max(d$K)
sets <- unique(d$dataset)
fits <- vector("list", length(sets))
scores <- vector("list", length(sets))
num <- function(v) if (is.null(v) || length(v) == 0) NA_real_ else as.numeric(v)[1]
for (i in seq_along(sets)) {
  s <- sets[i]
  w <- d[d$dataset == s, ]
  K <- w$K[1]
  items <- paste0("x", seq_len(K))
  model <- paste("lv =~", paste(items, collapse = " + "))
  row <- list(dataset = s, K = K, sum_x = sum(w[, items], na.rm = TRUE), converged = NA,
              post_check = NA, logl = NA_real_, fmin = NA_real_, iterations = NA_real_,
              max_abs_gradient = NA_real_, psi = NA_real_, error = "")
  for (nm in c("lambda", "theta", "nu")) for (j in seq_len(kmax)) row[[paste0(nm, j)]] <- NA_real_
  fit <- tryCatch(
    suppressWarnings(cfa(model, data = w[, items], meanstructure = TRUE, missing = "fiml")),
    error = function(e) e
  )
  if (inherits(fit, "error")) {
    row$error <- gsub("[\r\n,]", " ", conditionMessage(fit))
  } else {
    row$converged <- lavInspect(fit, "converged")
    row$post_check <- tryCatch(suppressWarnings(lavInspect(fit, "post.check")),
                               error = function(e) NA)
    row$logl <- tryCatch(num(fitMeasures(fit, "logl")), error = function(e) NA_real_)
    row$fmin <- num(fit@optim$fx)
    row$iterations <- num(fit@optim$iterations)
    row$max_abs_gradient <- if (length(fit@optim$dx)) max(abs(fit@optim$dx)) else NA_real_
    est <- lavInspect(fit, "est")
    row$psi <- est$psi[1, 1]
    for (j in seq_len(K)) {
      row[[paste0("lambda", j)]] <- est$lambda[j, 1]
      row[[paste0("theta", j)]] <- est$theta[j, j]
      row[[paste0("nu", j)]] <- est$nu[j, 1]
    }
    reg <- tryCatch(as.numeric(lavPredict(fit, method = "regression")),
                    error = function(e) rep(NA_real_, nrow(w)))
    bart <- tryCatch(as.numeric(lavPredict(fit, method = "Bartlett")),
                     error = function(e) rep(NA_real_, nrow(w)))
    keep <- rowSums(!is.na(w[, items])) > 0  # lavaan drops the empty cases
    sc <- data.frame(dataset = s, group = w$group, regression = NA_real_, bartlett = NA_real_)
    if (length(reg) == sum(keep)) sc$regression[keep] <- reg
    if (length(bart) == sum(keep)) sc$bartlett[keep] <- bart
    scores[[i]] <- sc
  }
  fits[[i]] <- as.data.frame(row, stringsAsFactors = FALSE)
}
res <- do.call(rbind, fits)
for (nm in names(res)) if (is.double(res[[nm]])) res[[nm]] <- signif(res[[nm]], 15)
write.csv(res, args[2], row.names = FALSE)
sc <- do.call(rbind, scores[!vapply(scores, is.null, logical(1))])
sc$regression <- signif(sc$regression, 15)
sc$bartlett <- signif(sc$bartlett, 15)
write.csv(sc, args[3], row.names = FALSE)
