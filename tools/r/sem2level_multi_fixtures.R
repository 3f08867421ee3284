# lavaan reference numbers for tests/test_sem2level_multi.py (run via
# tools/make_sem2level_multi_fixtures.py).
# Usage: Rscript sem2level_multi_fixtures.R <fixture dir> <dataset name> ...
# For each dataset reads <name>_x.csv (group, x1..xp) and <name>_g.csv (group, y, z1..zq)
# and writes <name>.json with the two-level SEM
#   level: 1  x1 ~~ x1 + x2 + ...; x2 ~~ x2 + ...; ...   (full within covariance)
#   level: 2  y ~ z1 + ... + x1 + ... + xp
# (cluster = group, ML) with lavaan's default fixed.x = TRUE and with fixed.x = FALSE.
suppressMessages({
  library(lavaan)
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

summary_of <- function(fit) {
  c(list(converged = lavInspect(fit, "converged"),
         post_check = suppressWarnings(lavInspect(fit, "post.check")),
         information = lavInspect(fit, "options")$information[1],
         logl = unname(fitMeasures(fit, "logl"))),
    pe_list(fit))
}

for (nm in names) {
  xd <- read.csv(file.path(dir, paste0(nm, "_x.csv")))
  gd <- read.csv(file.path(dir, paste0(nm, "_g.csv")))
  xs <- setdiff(colnames(xd), "group")
  zs <- setdiff(colnames(gd), c("group", "y"))
  within <- vapply(seq_along(xs), function(j) {
    paste(xs[j], "~~", paste(xs[j:length(xs)], collapse = " + "))
  }, "")
  model <- paste0("level: 1\n", paste(within, collapse = "\n"), "\nlevel: 2\n",
                  "y ~ ", paste(c(zs, xs), collapse = " + "), "\n")
  long <- merge(xd, gd, by = "group")
  long <- long[order(long$group), ]
  res <- list(sizes = as.vector(table(xd$group)), model = model)
  res$sem_2level <- summary_of(sem(model, data = long, cluster = "group"))
  res$sem_2level_free <- summary_of(sem(model, data = long, cluster = "group",
                                        fixed.x = FALSE))
  writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE),
             file.path(dir, paste0(nm, ".json")))
  cat("wrote", nm, "\n")
}
