"""Evaluation outputs: report.json, report.md, hypotheses/references per language, a BLEU bar chart,
and the per-language BLEU table printed at the end of a run.

report.json keys: ``bleu``/``chrf``/``num_sentences`` {lang: ...}, ``groups`` (BLEU High/Med/Low/Avg),
``chrf_groups``, ``signature`` (BLEU), ``chrf_signature``, ``bleu_signatures`` {lang: ...},
``wer``/``wer_groups`` (ASR only), ``mt`` (the same model on the transcripts: {bleu, groups, ...}),
``baselines`` {name: {bleu, groups, ...}}, ``paper`` (ComSL Large's published numbers) and run facts
(``task``, ``split``, ``checkpoint``, ``beam``, ...). With ``bootstrap`` (its method, resamples and
seed), the model and every system carry ``bleu_ci`` {lang: {mean, ci, low, high}} and ``avg_ci`` (95%,
sacreBLEU's bootstrap), and ``mt`` and each baseline a ``p_value`` {lang | Avg: p} against the model.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Iterable, Mapping, TextIO

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from comsl.languages import GROUPS, normalize_lang
from comsl.evaluation.baselines import BaselineResult
from comsl.evaluation.paper import COMSL_LARGE_BLEU, COMSL_LARGE_GROUPS, COMSL_LARGE_NAME
from comsl.evaluation.scoring import GROUP_NAMES, Scores, clean_segment
from comsl.evaluation.significance import N_BOOTSTRAP, SEED

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PLOT_PNG = "bleu_per_language.png"
_ORDER = [lang for members in GROUPS.values() for lang in members]


def ordered_langs(langs: Iterable[str]) -> list[str]:
    """Languages in the paper's table order (High, Med, Low groups), unknown ones last, sorted."""
    langs = list(langs)
    known = [lang for lang in _ORDER if lang in langs]
    return known + sorted(lang for lang in langs if lang not in known)


def _paper_value(lang: str) -> float | None:
    try:
        return COMSL_LARGE_BLEU.get(normalize_lang(lang))
    except ValueError:
        return None


def build_report(
    scores: Scores,
    *,
    task: str = "st",
    baselines: Iterable[BaselineResult] = (),
    meta: Mapping | None = None,
    mt: BaselineResult | None = None,
    confidence: Mapping[str, dict] | None = None,
) -> dict:
    """The report.json object (see the module docstring); ``meta`` adds run facts at top level;
    ``confidence``: comsl.evaluation.significance.bootstrap's result, keyed ``model`` and by system name."""
    langs = ordered_langs(scores.bleu)
    report: dict = {
        "task": task,
        "languages": langs,
        "bleu": {l: scores.bleu[l] for l in langs},
        "chrf": {l: scores.chrf[l] for l in langs},
        "groups": scores.groups,
        "chrf_groups": scores.chrf_groups,
        "signature": scores.signature,
        "chrf_signature": scores.chrf_signature,
        "bleu_signatures": {l: scores.bleu_signatures[l] for l in langs},
        "num_sentences": {l: scores.num_sentences[l] for l in langs},
    }
    if scores.wer is not None:
        report["wer"] = {l: scores.wer[l] for l in langs}
        report["wer_groups"] = scores.wer_groups
    if mt is not None:
        report["mt"] = mt.to_json()
    report["baselines"] = {b.name: b.to_json() for b in baselines}
    if confidence:
        report["bootstrap"] = {"method": "paired bootstrap resampling (sacreBLEU --paired-bs); Avg: each "
                                         "resample's per-language mean", "n": N_BOOTSTRAP, "seed": SEED}
        report.update(confidence.get("model", {}))
        for name, entry in confidence.items():
            target = report.get("mt") if name == "mt" else report["baselines"].get(name)
            if target is not None:
                target.update(entry)
    report["paper"] = {
        "system": COMSL_LARGE_NAME,
        "bleu": {l: _paper_value(l) for l in langs if _paper_value(l) is not None},
        "groups": dict(COMSL_LARGE_GROUPS),
    }
    report.update(dict(meta or {}))
    return report


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _ci(system: dict, key: str | None) -> str:
    """``[low, high]`` of a language (``key``) or of Avg (``key`` None) when the report has intervals."""
    interval = system.get("avg_ci") if key is None else system.get("bleu_ci", {}).get(key)
    return "–" if interval is None else f"[{_fmt(interval['low'])}, {_fmt(interval['high'])}]"


def _system_cell(system: dict, lang: str | None, group: str | None = None) -> str:
    """Another system's BLEU, with its 95% interval and p-value against the model when known."""
    value = system["bleu"].get(lang) if group is None else system["groups"].get(group)
    cell = _fmt(value)
    key = lang if group is None else ("Avg" if group == "Avg" else None)
    if value is None or key is None or "p_value" not in system:
        return cell
    p = system["p_value"].get(key)
    ci = _ci(system, lang if group is None else None)
    return cell if p is None else f"{cell} {ci} p={p:.3f}"


def _table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (languages, then groups) shared by the Markdown and stdout tables: the model's
    BLEU and 95% interval, chrF (WER), then the ``mt`` system and the baselines (BLEU [interval] p)."""
    systems = ({"MT": report["mt"]} if "mt" in report else {}) | report.get("baselines", {})
    wer, intervals = report.get("wer"), "bleu_ci" in report
    header = ["lang", "group", "n", "BLEU"] + (["95% CI"] if intervals else []) + ["chrF"] + (["WER"] if wer else [])
    header += list(systems) + ["paper"]
    rows = []
    for lang in report["languages"]:
        group = next((g for g, members in GROUPS.items() if lang in members), "")
        row = [lang, group, str(report["num_sentences"][lang]), _fmt(report["bleu"][lang])]
        row += [_ci(report, lang)] if intervals else []
        row += [_fmt(report["chrf"][lang])] + ([_fmt(wer[lang])] if wer else [])
        row += [_system_cell(s, lang) for s in systems.values()]
        row.append(_fmt(report["paper"]["bleu"].get(lang)))
        rows.append(row)
    for group in GROUP_NAMES:
        n = sum(int(report["num_sentences"][l]) for l in report["languages"]
                if group == "Avg" or l in GROUPS.get(group, ()))
        row = [group, "", str(n), _fmt(report["groups"][group])]
        row += [_ci(report, None) if group == "Avg" else "–"] if intervals else []
        row += [_fmt(report["chrf_groups"][group])] + ([_fmt(report["wer_groups"][group])] if wer else [])
        row += [_system_cell(s, None, group) for s in systems.values()]
        row.append(_fmt(report["paper"]["groups"].get(group)))
        rows.append(row)
    return header, rows


def format_table(report: dict) -> str:
    """Plain-text per-language BLEU table (with groups, baselines and the paper's numbers)."""
    header, rows = _table_rows(report)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda cells: "  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(header), line(["-" * w for w in widths])]
    n_langs = len(report["languages"])
    for i, row in enumerate(rows):
        if i == n_langs:
            out.append(line(["-" * w for w in widths]))
        out.append(line(row))
    out.append(f"BLEU signature: {report['signature']}")
    return "\n".join(out)


def print_table(report: dict, file: TextIO | None = None) -> None:
    """Print ``format_table(report)`` to stdout (or ``file``)."""
    print(format_table(report), file=file or sys.stdout)


def render_markdown(report: dict) -> str:
    """report.md: run facts, signature, and the per-language + group table with the paper alongside."""
    header, rows = _table_rows(report)
    facts = [f"- task: `{report['task']}`"]
    for key in ("split", "checkpoint", "beam", "max_new_tokens", "decode_seconds"):
        if key in report:
            facts.append(f"- {key}: `{report[key]}`")
    facts.append(f"- sacreBLEU signature (BLEU): `{report['signature']}`")
    facts.append(f"- sacreBLEU signature (chrF): `{report['chrf_signature']}`")
    lines = [
        "# ComSL evaluation report", "",
        *facts, "",
        f"Corpus BLEU per language on the raw references; groups as in the paper (High = "
        f"{' '.join(GROUPS['High'])}; Med = {' '.join(GROUPS['Med'])}; Low = the other 12), each the mean "
        "over the languages present; Avg is the mean over all languages present. `paper` is "
        f"{report['paper']['system']} (CoVoST 2 test, Tables 1 and 5); its group numbers are over all "
        "21 languages, so they compare only when all 21 are evaluated." + _bootstrap_note(report), "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|",
    ]
    n_langs = len(report["languages"])
    for i, row in enumerate(rows):
        cells = [f"**{c}**" if i >= n_langs and j == 0 else c for j, c in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    for name, base in report.get("baselines", {}).items():
        if "sentence" in base:
            lines += ["", f"`{name}` baseline sentences:", ""]
            lines += [f"- {lang}: {sentence}" for lang, sentence in base["sentence"].items()]
    return "\n".join(lines) + "\n"


def _bootstrap_note(report: dict) -> str:
    if "bootstrap" not in report:
        return ""
    b = report["bootstrap"]
    return (f" `95% CI` and the `[low, high]` after other systems' BLEU: sacreBLEU's bootstrap interval ({b['n']} "
            f"resamples, seed {b['seed']}; Avg: the mean over languages of each resample); `p`: paired-bootstrap "
            "p-value of that system against this model (sacreBLEU `--paired-bs`). `MT`: this model translating "
            "the reference transcripts (text input).")


def plot_bleu(report: dict, path: str | Path) -> Path:
    """Bar chart of BLEU per language (baselines and the paper as markers); writes a PNG."""
    langs = report["languages"]
    x = list(range(len(langs)))
    fig = Figure(figsize=(max(6.0, 0.55 * len(langs) + 2), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(x, [report["bleu"][l] for l in langs], color="#9ecae1", label="this model")
    styles = iter(zip("os^Dv", ("tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown")))
    for name, base in (({"mt": report["mt"]} if "mt" in report else {}) | report.get("baselines", {})).items():
        pts = [(i, base["bleu"][l]) for i, l in enumerate(langs) if l in base["bleu"]]
        marker, color = next(styles, ("x", "tab:gray"))
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=color, zorder=3, label=name)
    paper = [(i, report["paper"]["bleu"][l]) for i, l in enumerate(langs) if l in report["paper"]["bleu"]]
    if paper:
        ax.scatter(*zip(*paper), marker="_", s=300, color="black", zorder=3, label=report["paper"]["system"])
    ax.set_xticks(x, langs, rotation=45, ha="right")
    ax.set_ylabel("BLEU")
    avg = report["groups"]["Avg"]
    ax.set_title(f"{report['task'].upper()} BLEU per language (Avg {_fmt(avg)})")
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(clean_segment(s) + "\n" for s in lines)


def write_report(
    out_dir: str | Path,
    scores: Scores,
    hypotheses: Mapping[str, list[str]],
    references: Mapping[str, list[str]],
    *,
    task: str = "st",
    baselines: Iterable[BaselineResult] = (),
    meta: Mapping | None = None,
    mt: BaselineResult | None = None,
    confidence: Mapping[str, dict] | None = None,
) -> dict:
    """Write report.json, report.md, hypotheses/<lang>.txt, references/<lang>.txt, the PNG, and
    each baseline's hypotheses under baselines/<name>/<lang>.txt when it kept them (the ``mt``
    system's under mt/<lang>.txt). ``mt``/``confidence``: see build_report.

    Returns the report dict. ``sacrebleu references/fr.txt -i hypotheses/fr.txt`` reproduces
    ``report["bleu"]["fr"]``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    baselines = list(baselines)
    report = build_report(scores, task=task, baselines=baselines, meta=meta, mt=mt, confidence=confidence)
    for lang in report["languages"]:
        _write_lines(out / "hypotheses" / f"{lang}.txt", list(hypotheses[lang]))
        _write_lines(out / "references" / f"{lang}.txt", list(references[lang]))
    for base in baselines:
        for lang, hyps in (base.hypotheses or {}).items():
            _write_lines(out / "baselines" / base.name / f"{lang}.txt", hyps)
    for lang, hyps in ((mt.hypotheses or {}) if mt is not None else {}).items():
        _write_lines(out / "mt" / f"{lang}.txt", hyps)
    report["files"] = {"markdown": REPORT_MD, "plot": PLOT_PNG, "hypotheses": "hypotheses/",
                       "references": "references/"}
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    plot_bleu(report, out / PLOT_PNG)
    return report
