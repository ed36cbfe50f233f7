"""``adv2 report RUN_DIR``: one self-contained HTML page, Markdown tables and PNG figures of a run.

Writes into ``RUN_DIR``: ``report.html`` (every image embedded as a data URI, no external
resource), ``report.md`` (the tables, linking the figures) and ``figures/*.png``:

- ``summary.png``: success rate and L1 per interpreter and attack;
- ``maps-INTERPRETER.png``: a grid as the paper's Figures 17 and 20 (image, benign map, target
  map when it is not the benign one, then the map under each attack);
- ``transfer-ATTACK.png``: the transfer matrix across interpreters (made against × measured
  by, L1 to the measuring interpreter's target map), when the run measured it;
- ``transfer-models.png``: success rate on each other model, when the run measured it.

The report reads the run directory only: the tables show the columns ``summary.json`` names
(``columns``: ``rows``, ``transfer``), so it needs nothing of the code that made the run. Every
string that comes from a config, a dataset or a run (class names, paths, model names) is
HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import yaml

from adv2._io import atomic_write_bytes, read_safetensors
from adv2.report.figures import heatmap, maps_figure, summary_figure
from adv2.report.tables import markdown_table

#: Keys of a summary row that are never a table column of their own (per-row details).
_DETAIL = ("seconds",)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td.s,th.s{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.meta{color:#555;font-size:.9em}code{background:#f6f6f6;padding:1px 4px}
"""


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _table(rows: list[dict], keys) -> str:
    keys = [k for k in keys if any(k in r for r in rows)]
    head = "".join(f'<th class="{"s" if k in ("attack", "interpreter", "model", "measured_by") else ""}">'
                   f"{html.escape(k)}</th>" for k in keys)
    body = []
    for r in rows:
        cells = "".join(f'<td class="{"s" if isinstance(r.get(k), str) else ""}">{html.escape(_fmt(r.get(k)))}</td>'
                        for k in keys)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def transfer_matrices(rows: list[dict], source: str) -> dict[str, tuple[list[str], list[list]]]:
    """Per attack: ``(interpreters, matrix)`` of L1, ``matrix[a][b]`` = made against ``a``,
    measured by ``b`` on the source model (from ``summary["transfer"]`` rows)."""
    out = {}
    for attack in dict.fromkeys(r["attack"] for r in rows if r["model"] == source):
        rs = [r for r in rows if r["attack"] == attack and r["model"] == source]
        names = list(dict.fromkeys(r["interpreter"] for r in rs))
        by = {(r["interpreter"], r["measured_by"]): r["l1"] for r in rs}
        out[attack] = (names, [[by.get((a, b)) for b in names] for a in names])
    return out


def _read(path: Path, parse):
    """``parse`` of the text of ``path``; a ``ValueError`` naming the file when it does not read back."""
    try:
        return parse(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: damaged file ({' '.join(str(e).split())})") from None


def columns(summary: dict, part: str = "rows") -> list[str]:
    """The columns of the table of ``summary[part]`` (``rows`` or ``transfer``): those its
    ``columns`` entry names; for a summary written before it had one, the keys of its rows in their
    order, less the confidence intervals (``*_ci95``) and per-row details."""
    named = (summary.get("columns") or {}).get(part)
    if named:
        return [str(k) for k in named]
    rows = summary.get(part) or []
    keys = dict.fromkeys(k for r in rows for k in r)
    return [k for k in keys if not k.endswith("_ci95") and k not in _DETAIL]


def build_report(run_dir: str | Path, max_rows: int = 4) -> Path:
    """Write ``report.html``, ``report.md`` and ``figures/`` for the finished run in ``run_dir``;
    return the HTML path. A ``ValueError`` when ``run_dir`` holds no finished run, or names the
    file of it that does not read back."""
    run = Path(run_dir)
    if not (run / "summary.json").is_file() or not (run / "config.yaml").is_file():
        raise ValueError(f"{run} holds no finished run (summary.json and config.yaml are built by `adv2 run`, "
                         f"`adv2 demo` or `adv2 merge`)")
    summary = _read(run / "summary.json", json.loads)
    config = _read(run / "config.yaml", yaml.safe_load) or {}
    tensors = read_safetensors(run / "tensors.safetensors") if (run / "tensors.safetensors").is_file() else {}
    env = _read(run / "env.json", json.loads) if (run / "env.json").is_file() else {}
    figs = run / "figures"
    figs.mkdir(exist_ok=True)
    rows, source = summary["rows"], summary.get("model", "")
    names = list(dict.fromkeys(r["interpreter"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    sections: list[tuple[str, str, str]] = []  # (title, html, markdown)
    keys, transfer_keys = columns(summary, "rows"), columns(summary, "transfer")

    p = summary_figure(rows, figs / "summary.png", title=f"{source}: success rate and L1 to the target map")
    legend = ""
    if "judged_ratio" in keys:
        legend = (f"A random interpreter's maps (MASK's jitter) re-solved with the defender seeds "
                  f"{summary.get('defender_seeds')}: l1_defender is the mean L1 to the benign map of the same "
                  "seed, noise_floor the L1 between two seeds' benign maps (the interpreter's own noise), "
                  "judged_ratio = (ADV² − floor) / (baseline − floor) over the images both attacks succeeded on: "
                  "0 is as close as a second run of the interpreter, 1 no closer than the baseline.")
        if "matched_judged_ratio" in keys:
            legend += (" matched_judged_ratio is the same figure for ADV²-StAdv against StAdv stopped at "
                       "ADV²-StAdv's flow size (stadv-matched).")
    sections.append(("Summary", _table(rows, keys) + (f"<p>{html.escape(legend)}</p>" if legend else "")
                     + _img(p, "success rate and L1 per interpreter"),
                     markdown_table(rows, [k for k in keys if any(k in r for r in rows)])
                     + (f"\n\n{legend}" if legend else "") + "\n\n![summary](figures/summary.png)"))
    if summary.get("benign"):
        b = [{"interpreter": k, **v} for k, v in summary["benign"].items()]
        sections.append(("Benign maps", _table(b, ("interpreter", "pointing_game")),
                         markdown_table(b, ("interpreter", "pointing_game"))))

    trows = summary.get("transfer") or []
    if trows:
        parts_h, parts_m = [], []
        base_name = {r["attack"] for r in rows if r["attack"] in ("pgd", "stadv")}
        for attack, (inames, m) in transfer_matrices(trows, source).items():
            if len(inames) > 1 and any(r["interpreter"] != r["measured_by"] for r in trows):
                baseline = {"adv2": "pgd", "adv2-stadv": "stadv"}.get(attack)
                if baseline in base_name:  # relative to the baseline's L1 under the measuring interpreter
                    bl = {r["interpreter"]: r["l1"] for r in rows if r["attack"] == baseline}
                    m = [[None if v is None or not bl.get(b) else v / bl[b] for v, b in zip(r, inames, strict=True)]
                         for r in m]
                    what = f"L1 to the target map ÷ {baseline}'s L1 (below 1: closer than {baseline})"
                else:
                    what = "L1 of the map to the target map"
                p = heatmap(m, inames, inames, figs / f"transfer-{attack}.png", title=f"{attack}: {what}",
                            xlabel="measured by", ylabel="made against")
                parts_h.append(_img(p, f"transfer matrix of {attack}"))
                parts_m.append(f"![transfer {attack}](figures/transfer-{attack}.png)")
        others = list(dict.fromkeys(r["model"] for r in trows if r["model"] != source))
        if others:
            cols = [f"{a} → {o}" for o in others for a in attacks]
            by = {(r["attack"], r["model"], r["interpreter"]): r["success_rate"] for r in trows}
            m = [[by.get((a, o, i)) for o in others for a in attacks] for i in names]
            p = heatmap(m, names, cols, figs / "transfer-models.png", cmap="viridis", vmin=0.0, vmax=1.0,
                        title=f"made on {source}: success rate on the other model", ylabel="made against")
            parts_h.append(_img(p, "success rate on other models"))
            parts_m.append("![transfer across models](figures/transfer-models.png)")
        sections.append(("Transfer", "".join(parts_h) + "<details><summary>all transfer rows</summary>"
                         + _table(trows, transfer_keys) + "</details>",
                         markdown_table(trows, transfer_keys) + "\n\n" + "\n\n".join(parts_m)))

    if tensors:
        classes = config.get("classes") or []

        def cname(k: int) -> str:
            return str(classes[k]) if k < len(classes) else str(k)

        labels = [f"{cname(int(y))}→{cname(int(t))}" for y, t in zip(tensors["labels"], tensors["target_class"],
                                                                      strict=True)]
        parts_h, parts_m = [], []
        for name in names:
            maps = {name: {a: tensors[f"map_{a}_{name}"] for a in ("benign", "target", *attacks)
                           if f"map_{a}_{name}" in tensors}}
            p = maps_figure(tensors["x"], maps, figs / f"maps-{name}.png", labels=labels, max_rows=max_rows,
                            title=f"{source}, {name}: maps of the benign image and under each attack")
            parts_h.append(_img(p, f"maps of {name}"))
            parts_m.append(f"![maps {name}](figures/maps-{name}.png)")
        sections.append(("Maps", "".join(parts_h), "\n\n".join(parts_m)))

    data = config.get("data") or {}
    meta = (f"model <code>{html.escape(str(source))}</code> · {summary.get('n')} examples of "
            f"<code>{html.escape(str(data.get('name', '')))}</code>"
            f"{' at ' + html.escape(str(data['root'])) if data.get('root') else ''} · target map "
            f"<code>{html.escape(str(summary.get('target_map', 'benign')))}</code>"
            f" · ε {html.escape(_fmt(config.get('eps')))}"
            f" · seed {html.escape(str(summary.get('seed')))} · adv2 {html.escape(str(env.get('adv2', '')))}, "
            f"torch {html.escape(str(env.get('torch', '')))}, device {html.escape(str(env.get('device', '')))}")
    classes = [str(c) for c in config.get("classes") or []]
    if classes:
        meta += (" · classes: " + ", ".join(f"<code>{html.escape(c)}</code>" for c in classes[:20])
                 + (f" … ({len(classes)} in all)" if len(classes) > 20 else ""))
    body = "".join(f"<h2>{html.escape(t)}</h2>{h}" for t, h, _ in sections)
    cfg_text = html.escape(yaml.safe_dump({k: v for k, v in config.items() if k not in ("classes",)},
                                          sort_keys=False, width=100)[:20000])
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>adv2 report: '
            f"{html.escape(str(source))}</title><style>{_CSS}</style></head><body>"
            f"<h1>adv2 report: {html.escape(str(source))}</h1><p class=\"meta\">{meta}</p>{body}"
            f"<h2>Configuration</h2><details><summary>config.yaml</summary><pre>{cfg_text}</pre></details>"
            f"</body></html>\n")
    out = run / "report.html"
    atomic_write_bytes(out, page.encode())
    md = [f"# adv2 report: {source}", "", f"{summary.get('n')} examples, target map "
          f"`{summary.get('target_map', 'benign')}`, seed {summary.get('seed')}.", ""]
    for title, _, m in sections:
        md += [f"## {title}", "", m, ""]
    atomic_write_bytes(run / "report.md", "\n".join(md).encode())
    return out
