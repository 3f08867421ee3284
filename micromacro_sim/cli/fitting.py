"""``micromacro fit DATA`` and ``micromacro demo``: the methods on one dataset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["cmd_demo", "cmd_fit", "fit_methods"]

def fit_methods(values: list[str] | None) -> list | None:
    """``--method`` values as a config's ``methods:`` list.

    Each value is a comma-separated list of names (``unadjusted,croon``), one labelled
    method with options (``blup_ml={method: blup, reml: false}``), or a YAML/JSON list
    or mapping (``'[croon, {lav: {method: sem_2level, lavaan_fixed_x: true}}]'``).
    """
    from micromacro_sim.core.errors import DataError
    from micromacro_sim.design.yamlio import YAMLSyntaxError, parse_yaml_text

    if not values:
        return None
    items: list = []
    for value in values:
        text = value.strip()
        head, sep, body = text.partition("=")
        if text[:1] in "[{" or sep:
            try:
                parsed = parse_yaml_text(text if text[:1] in "[{" else body, value, "method")
            except YAMLSyntaxError:
                raise DataError(f"method: cannot read {value!r} as YAML") from None
            if sep and text[:1] not in "[{":
                parsed = [{head.strip(): parsed}]
            if isinstance(parsed, dict):
                parsed = [{k: v} for k, v in parsed.items()]
            if not isinstance(parsed, list):
                raise DataError(f"method: expected a list or mapping, got {value!r}")
            items += parsed
        else:
            items += [m.strip() for m in text.split(",") if m.strip()]
    return items


def cmd_fit(args: argparse.Namespace) -> int:
    """``micromacro fit DATA --group ... --x ... --y ...``: every method on one table."""
    from micromacro_sim.api.fitting import fit
    from micromacro_sim.api.userdata import read_table_file
    from micromacro_sim.core.status import Status
    from micromacro_sim.run.atomic import write_atomic
    from micromacro_sim.run.paths import check_not_input, check_output_file

    if args.output is not None:
        check_output_file(args.output)
        check_not_input([args.output], [args.data])
    methods = fit_methods(args.method)
    frame = read_table_file(args.data, labels=[args.group, args.member])
    res = fit(frame, group=args.group, x=args.x, y=args.y, z=args.z, member=args.member,
              row_order_is_member=args.row_order_is_member,
              method=methods, cov_type="HC3")
    table = res.to_frame()
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    for r in res.results:
        if r.status is Status.NOT_APPLICABLE:
            print(f"note: {r.method} not applicable [{r.reason_code}]: {r.reason}",
                  file=sys.stderr)
    warning = res.reliability.warning()
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.output is not None:
        out = Path(args.output)
        write_atomic(out, lambda tmp: table.to_csv(tmp, index=False))
        print(f"wrote {len(table)} rows to {out}")
    else:
        import pandas as pd

        shown = table[table["status"] != Status.NOT_APPLICABLE.value]  # noted above
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(shown.to_string(index=False, float_format=lambda v: f"{v:.5g}", na_rep=""))
    print("\nreliability of the group means (ICC(2) is the reliability of a group mean):")
    print(res.reliability.table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``micromacro demo bfi``: the factor model and the mixed model on the BFI items."""
    from micromacro_sim.api.demo import bfi_demo

    print(bfi_demo(with_semopy=not args.no_semopy).format())
    return 0
