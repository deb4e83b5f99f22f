"""``budget check`` and ``budget update``: uplink bytes per client-round against a budget file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from tabulate import tabulate

from pflbench.errors import UserError
from pflbench.cli.common import (
    app, DEFAULT, _err, _method_options,
)


# The suite's engine, orchestration and results are imported inside the commands: they load
# torch (and matplotlib), which `pflbench --help` and `pflbench list` do without.


budget_app = typer.Typer(help="The communication budget: uplink bytes per client-round, measured, against a budget file; "
                              "exact payloads of any architecture without its weights (show).",
                         no_args_is_help=True)


app.add_typer(budget_app, name="budget")
_budget_file = typer.Option(Path("budget.json"), "--budget", help="the budget file (JSON)")
_budget_methods = typer.Option(None, help="comma-separated methods (default: every method in the budget file)")
_budget_codecs = typer.Option(None, help="comma-separated codecs (default: the budget file's, else fp32,fp16,int8,topk:0.1)")


def _budget_lines(budget: Path, methods: Optional[str], codecs: Optional[str], new_file: bool = False):
    from pflbench.federation.codec import make_codec
    from pflbench.orchestration import budget as b

    data = {"about": b.ABOUT, "model": "tiny", b.KEY: {}} if new_file and not budget.exists() else b.read(budget)
    codec_list = [c.strip() for c in codecs.split(",") if c.strip()] if codecs else None
    for c in codec_list or []:
        make_codec(c)  # an unknown codec is one line, before anything runs
    method_list = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    if new_file and not method_list and not data[b.KEY]:
        raise UserError(f"{budget} is new: name the methods to budget with --methods")
    return data, b.compare(data, method_list, codec_list, progress=lambda what: _err(f"measuring {what}"))


def _budget_table(lines) -> str:
    rows = [[l.method, l.codec, "" if l.budget is None else f"{l.budget:,}", f"{l.measured:,}",
             "" if l.ratio is None else f"{l.ratio:.3f}", l.verdict] for l in lines]
    return tabulate(rows, headers=["method", "codec", "budget", "measured", "ratio", ""], tablefmt="github", disable_numparse=True)


@budget_app.command("check")
def budget_check(budget: Path = _budget_file, methods: Optional[str] = _budget_methods, codecs: Optional[str] = _budget_codecs) -> None:
    """Measure uplink bytes per client-round and compare with the budget: exit 1 if any rose."""
    data, lines = _budget_lines(budget, methods, codecs)
    print(_budget_table(lines))
    rose = [l for l in lines if l.verdict == "ROSE"]
    fell = [l for l in lines if l.verdict == "fell"]
    new = [l for l in lines if l.verdict == "new"]
    if fell:
        print(f"{len(fell)} figure(s) fell: record them with `pflbench budget update --budget {budget}`")
    if new:
        print(f"{len(new)} figure(s) not in the budget: add them with `pflbench budget update --budget {budget}`")
    if rose:
        print(f"uplink rose for {', '.join(sorted({f'{l.method}/{l.codec}' for l in rose}))}: over budget")
        raise typer.Exit(1)


@budget_app.command("update")
def budget_update(budget: Path = _budget_file, methods: Optional[str] = _budget_methods, codecs: Optional[str] = _budget_codecs) -> None:
    """Measure and write the figures into the budget file (created if missing)."""
    from pflbench.orchestration import budget as b

    data, lines = _budget_lines(budget, methods, codecs, new_file=True)
    b.write(budget, b.updated(data, lines))
    print(_budget_table(lines))
    print(f"written: {budget}")


@budget_app.command("show")
def budget_show(
    model: str = typer.Option(DEFAULT.model, help="registered model, shipped config (qwen2.5-0.5b, llama-3.1-8b, ...), config.json file or folder, or Hugging Face id in the local cache"),
    method: Optional[str] = typer.Option(None, "--method", "--methods", help="comma-separated methods (default: every registered method)"),
    codec: str = typer.Option(DEFAULT.codec, help="uplink codec: fp32, fp16, bf16, int8 or topk:F (the downlink is fp32)"),
    opt: Optional[list[str]] = typer.Option(None, "--opt", "-o", help="KEY=VALUE for every method that has KEY, or METHOD:KEY=VALUE (repeatable)"),
    rounds: int = typer.Option(DEFAULT.rounds, min=1, help="rounds, for the run's totals"),
    clients_per_round: int = typer.Option(DEFAULT.clients_per_round, min=1, help="clients sampled each round, for the run's totals"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (an object for one method, a list for several), nothing else"),
) -> None:
    """Exact uplink and downlink bytes per client-round of each method on MODEL's architecture,
    built on PyTorch's meta device (no memory, no weights read): the method's adapters
    attached, zeros of the real shapes encoded by the run's codec. Totals for ROUNDS x
    CLIENTS_PER_ROUND uploads and broadcasts."""
    import json

    from pflbench import registry
    from pflbench.config import parse_options
    from pflbench.federation.codec import make_codec
    from pflbench.orchestration import budget as b
    from pflbench.results.table import human_bytes

    make_codec(codec)  # an unknown codec is one line, before any model
    names = registry.methods.usable([m.strip() for m in method.split(",") if m.strip()] if method else None, warn=_err)
    options = _method_options(opt or [], names, "shown")
    shown = [b.meta_payload(model, m, codec, parse_options(options[m])) for m in names]
    rows = [{"model": p.model, "architecture": p.architecture, "method": p.method, "codec": p.codec,
             "base_parameters": p.base_parameters, "parameters": p.parameters,
             "shared_parameters": p.shared_parameters, "uplink_bytes_per_client_round": p.uplink_bytes,
             "downlink_bytes_per_client_round": p.downlink_bytes, "encoded": p.encoded, "rounds": rounds,
             "clients_per_round": clients_per_round, **p.totals(rounds, clients_per_round)} for p in shown]
    if as_json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return
    first = shown[0]
    body = [[r["method"], f"{r['shared_parameters']:,}", f"{r['uplink_bytes_per_client_round']:,}",
             f"{r['downlink_bytes_per_client_round']:,}", human_bytes(r["uplink_bytes"]), human_bytes(r["downlink_bytes"]),
             human_bytes(r["total_bytes"])] for r in rows]
    print(f"{model} ({first.architecture}): {first.base_parameters:,} parameters; uplink codec {first.codec}, downlink fp32")
    print(tabulate(body, headers=["method", "shared values", "uplink B / client-round", "downlink B / client-round",
                                  f"uplink, {rounds} x {clients_per_round}", "downlink", "up+down"],
                   tablefmt="github", disable_numparse=True))
    how = ("zeros of the real shapes encoded by the codecs" if all(p.encoded for p in shown) else
           f"encoded where a payload holds at most {b.ENCODE_LIMIT:,} values, else the codec's length rule (the one its decoder checks)")
    print(f"Bytes: {how}; totals: every sampled client uploads and is broadcast to every round, delivered or not.")
