# lavaan reference output for the "sam" and "zcond_score" estimators.
# Usage: Rscript tools/r/fsr_fixtures.R <fixture dir> <name> [<name> ...]
# Reads <dir>/<name>.csv (wide: x1..xn, y, z1..zq) and writes <dir>/<name>_lavaan.csv
# (method, lhs, op, rhs, est, se) and <dir>/<name>_zscores.csv (lavPredict scores).
suppressMessages(library(lavaan))
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]
for (name in args[-1]) {
  d <- read.csv(file.path(dir, paste0(name, ".csv")))
  xs <- grep("^x[0-9]+$", names(d), value = TRUE)
  zs <- grep("^z[0-9]+$", names(d), value = TRUE)
  meas <- paste0("lv =~ ", paste0("1*", xs, collapse = " + "), "\n",
                 paste0(xs, " ~~ v*", xs, collapse = "\n"), "\n")
  struc <- paste0("y ~ ", paste(c(zs, "lv"), collapse = " + "), "\n",
                  paste0("lv ~~ ", zs, collapse = "\n"), "\n",
                  if (length(zs) > 1) paste0(combn(zs, 2, paste, collapse = " ~~ "), collapse = "\n") else "",
                  "\n")
  keep <- function(pe, method) {
    pe <- pe[pe$op %in% c("~", "~~", "~1") & !(pe$lhs %in% xs), ]
    data.frame(method = method, lhs = pe$lhs, op = pe$op, rhs = pe$rhs,
               est = pe$est, se = pe$se)
  }
  # local SAM, every option at its default
  f_sam <- sam(paste0(meas, struc), data = d, sam.method = "local")
  out <- keep(parameterEstimates(f_sam), "sam")
  # full ML SEM, same model
  f_sem <- sem(paste0(meas, struc), data = d)
  out <- rbind(out, keep(parameterEstimates(f_sem), "sem"))
  # Z-conditional regression factor scores, then lm
  f_z <- sem(paste0(meas, "lv ~ ", paste(zs, collapse = " + "), "\n"), data = d)
  fs <- as.numeric(lavPredict(f_z, method = "regression"))
  out <- rbind(out, keep(parameterEstimates(f_z), "zcond_mm"))
  d$fs <- fs
  fm <- lm(as.formula(paste("y ~", paste(c(zs, "fs"), collapse = " + "))), data = d)
  cf <- summary(fm)$coefficients
  out <- rbind(out, data.frame(method = "zcond_lm", lhs = "y", op = "~",
                               rhs = rownames(cf), est = cf[, 1], se = cf[, 2]))
  write.csv(out, file.path(dir, paste0(name, "_lavaan.csv")), row.names = FALSE)
  write.csv(data.frame(fs = sprintf("%.15g", fs)), file.path(dir, paste0(name, "_zscores.csv")),
            row.names = FALSE, quote = FALSE)
}
