# lavaan's verdict on Clark's CFA call for every dataset of one CSV (run via
# tools/make_cfa_lavaan_fixture.py).
# Usage: Rscript cfa_lavaan_gate.R <input csv> <output csv>
# The input has columns replication, group, x1..xn (one row per group). For each
# replication this fits Clark's call cfa('lv =~ x1 + ... + xn', meanstructure = FALSE,
# estimator = "MLR") and records lavInspect(fit, "converged"), lavInspect(fit,
# "post.check"), fmin, the largest absolute gradient element at the end (lavaan's
# check.gradient compares it with 0.001), a few estimates and the marker's standardized
# loading.
suppressMessages(library(lavaan))

args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
items <- grep("^x[0-9]+$", names(d), value = TRUE)
model <- paste("lv =~", paste(items, collapse = " + "))
reps <- sort(unique(d$replication))
out <- vector("list", length(reps))
num <- function(v) if (is.null(v) || length(v) == 0) NA_real_ else as.numeric(v)[1]
for (i in seq_along(reps)) {
  r <- reps[i]
  w <- d[d$replication == r, items]
  row <- list(replication = r, converged = NA, post_check = NA, fmin = NA_real_,
              max_abs_gradient = NA_real_, phi = NA_real_, lambda2 = NA_real_,
              theta_min = NA_real_, std_lambda1 = NA_real_, iterations = NA_real_,
              sum_x = sum(as.matrix(w)), error = "")
  fit <- tryCatch(
    suppressWarnings(cfa(model, data = w, meanstructure = FALSE, estimator = "MLR")),
    error = function(e) e
  )
  if (inherits(fit, "error")) {
    row$error <- gsub("[\r\n,]", " ", conditionMessage(fit))
  } else {
    row$converged <- lavInspect(fit, "converged")
    row$post_check <- tryCatch(suppressWarnings(lavInspect(fit, "post.check")),
                               error = function(e) NA)
    row$fmin <- num(fit@optim$fx)  # fitMeasures(fit, "fmin") when converged
    row$max_abs_gradient <- if (length(fit@optim$dx)) max(abs(fit@optim$dx)) else NA_real_
    row$iterations <- num(fit@optim$iterations)
    est <- lavInspect(fit, "est")
    row$phi <- est$psi[1, 1]
    row$lambda2 <- est$lambda[2, 1]
    row$theta_min <- min(diag(est$theta))
    std <- tryCatch(suppressWarnings(lavInspect(fit, "std")$lambda[1, 1]),
                    error = function(e) NA_real_)
    row$std_lambda1 <- std
  }
  out[[i]] <- as.data.frame(row, stringsAsFactors = FALSE)
}
res <- do.call(rbind, out)
res$accepted <- !is.na(res$converged) & res$converged & !is.na(res$post_check) & res$post_check
for (nm in names(res)) if (is.double(res[[nm]]) && nm != "replication") res[[nm]] <- signif(res[[nm]], 12)
write.csv(res, args[2], row.names = FALSE)
