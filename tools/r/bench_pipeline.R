# Times the R pipeline of the seed study's estimators on the same datasets as
# `micromacro bench`: lme4 BLUPs, glmmTMB heterogeneous-variance BLUPs, lavaan CFA +
# regression scores, lavaan single-step SEM and two-level lavaan, each followed by the
# second-step lm where the method is two-step.
# Usage: Rscript tools/r/bench_pipeline.R DATASETS.csv OUT.csv
suppressPackageStartupMessages({
  library(lavaan); library(lme4); library(glmmTMB)
})
args <- commandArgs(trailingOnly = TRUE)
long <- read.csv(args[1])
ids <- unique(long$dataset)
timeit <- function(expr) {
  t0 <- proc.time()[["elapsed"]]
  force(expr)
  proc.time()[["elapsed"]] - t0
}
rows <- list()
for (d in ids) {
  dl <- long[long$dataset == d, ]
  dl$group <- factor(dl$group)
  dl$item <- factor(dl$member)
  n <- max(dl$member) + 1
  wide <- reshape(dl[, c("group", "member", "x")], idvar = "group", timevar = "member",
                  direction = "wide")
  names(wide) <- c("group", paste0("x", seq_len(n)))
  g <- dl[!duplicated(dl$group), c("group", "y", "z")]
  wide <- merge(wide, g, by = "group")
  items <- paste0("x", seq_len(n))
  t <- c(
    lme4 = timeit({
      m <- lmer(x ~ (1 | group), data = dl, REML = TRUE)
      u <- ranef(m)$group[as.character(g$group), 1]
      lm(y ~ z + u, data = cbind(g, u = u))
    }),
    glmmTMB = timeit({
      m <- glmmTMB(x ~ (1 | group) + diag(0 + item | group), data = dl)
      u <- ranef(m)$cond$group[as.character(g$group), 1]
      lm(y ~ z + u, data = cbind(g, u = u))
    }),
    lavaan_cfa = timeit({
      f <- cfa(paste("lv =~", paste(items, collapse = " + ")), data = wide)
      fs <- lavPredict(f)[, 1]
      lm(y ~ z + fs, data = cbind(wide, fs = fs))
    }),
    lavaan_sem = timeit({
      model <- paste0("lv =~ ", paste0("1*", items, collapse = " + "), "\n",
                      paste0(items, " ~~ v*", items, collapse = "\n"), "\n",
                      "lv ~~ z\n y ~ z + lv")
      sem(model, data = wide)
    }),
    lavaan_2level = timeit({
      sem("level: 1\n x ~~ x\nlevel: 2\n y ~ z + x", data = dl, cluster = "group")
    })
  )
  rows[[length(rows) + 1]] <- data.frame(dataset = d, method = names(t), seconds = unname(t))
}
write.csv(do.call(rbind, rows), args[2], row.names = FALSE)
