"""The monitor's report as one HTML page a person opens offline: no script, no stylesheet or
font from elsewhere; each statistic's verdict with its test, value and threshold, and the live
distribution drawn over the reference's (inline SVG bars)."""

from __future__ import annotations

from html import escape

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
.drift { color: #b00020; font-weight: bold; }
.ok { color: #1b5e20; }
.few { color: #8a6d00; }
svg { display: block; }
"""
VERDICT_CLASS = {"drift": "drift", "no drift": "ok", "too few captures": "few"}
REFERENCE_COLOUR, LIVE_COLOUR = "#9e9e9e", "#1565c0"
WIDTH, HEIGHT = 360, 90


def bars(reference: list[float], live: list[float], names: list[str] | None = None) -> str:
    """Reference and live shares side by side per bin (or class), scaled to the largest."""
    top = max([*reference, *live, 1e-9])
    step = WIDTH / len(reference)
    shapes = []
    for index, (theirs, ours) in enumerate(zip(reference, live, strict=True)):
        x = index * step
        for offset, share, colour in ((0, theirs, REFERENCE_COLOUR), (step / 2, ours, LIVE_COLOUR)):
            height = HEIGHT * share / top
            shapes.append(
                f'<rect x="{x + offset:.1f}" y="{HEIGHT - height:.1f}" width="{step / 2 - 1:.1f}"'
                f' height="{height:.1f}" fill="{colour}"><title>{share:.3f}</title></rect>'
            )
        if names:
            shapes.append(
                f'<text x="{x + step / 2:.1f}" y="{HEIGHT + 12}" font-size="10"'
                f' text-anchor="middle">{escape(names[index])}</text>'
            )
    return (
        f'<svg width="{WIDTH}" height="{HEIGHT + 16}" role="img"'
        f' aria-label="reference (grey) and live (blue) shares">{"".join(shapes)}</svg>'
    )


def drawing(test: dict) -> str:
    if "histogram" in test:
        edges = test["histogram"]["edges"]
        return (
            bars(test["histogram"]["reference"], test["histogram"]["live"])
            + f"<small>{edges[0]:g} … {edges[-1]:g}</small>"
        )
    names = list(test["reference_share"])
    return bars(
        [test["reference_share"][n] for n in names], [test["live_share"][n] for n in names], names
    )


def test_row(test: dict) -> str:
    verdict = "drift" if test["drift"] else "no drift"
    shift = (
        f"class shift {test['class_shift']:.3f}"
        if "class_shift" in test
        else f"KS {test['value']:.3f}; mean {test['reference_mean']:g} → {test['live_mean']:g}"
    )
    return (
        f"<tr><td><b>{escape(test['statistic'])}</b><br><small>{escape(test['description'])}"
        f"</small></td><td>{escape(test['test'])}</td><td>{shift}<br>p = {test['p_value']:.3g}"
        f"</td><td>{escape(test['threshold'])}</td>"
        f'<td class="{VERDICT_CLASS[verdict]}">{verdict}</td><td>{drawing(test)}</td></tr>'
    )


def label_section(name: str, label: dict) -> str:
    verdict = label["verdict"]
    head = (
        f'<h2>{escape(name)}: <span class="{VERDICT_CLASS[verdict]}">{escape(verdict)}</span></h2>'
        f"<p>{label['requests']} requests, {label['images']} images captured."
    )
    if not label["tests"]:
        return f"{head} {escape(label['note'])}</p>"
    rows = "".join(test_row(test) for test in label["tests"])
    return (
        f"{head}</p><table><tr><th>statistic</th><th>test</th><th>value</th><th>drift when</th>"
        f"<th>verdict</th><th>reference (grey), live (blue)</th></tr>{rows}</table>"
    )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def page(report: dict) -> str:
    window = report["window"]
    skipped = ", ".join(f"{count} {why}" for why, count in window["skipped_images"].items())
    version = f" version {report['version']}" if report["version"] else ""
    sections = "".join(label_section(name, label) for name, label in report["labels"].items())
    verdict = report["verdict"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Monitor: {escape(report["model"])}{version}: {escape(verdict)}</title>
<style>{STYLE}</style></head><body>
<h1>{escape(report["model"])}{version}:
<span class="{VERDICT_CLASS[verdict]}">{escape(verdict)}</span></h1>
<p>Captures in <code>{escape(window["captures"])}</code> ({plural(window["files"], "file")}, from
{escape(str(window["first"]))} to {escape(str(window["last"]))}) against the reference of
<code>{escape(report["package"])}</code> ({report["reference"]["images"]}
{escape(report["reference"]["split"])} images).
Images left out: {escape(skipped or "none")}.</p>
{sections or "<p>No captured images of this model in the window.</p>"}
</body></html>
"""
