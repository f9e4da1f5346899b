"""`fgalign show`: a response with each token coloured by its reward (HTML with hover values, or PNG).

Colours come from a diverging map centred on 0 (red: negative, blue: positive), scaled by the largest
|value| shown, so kept tokens of an anchored token RM look white and the edits stand out.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from fgalign.data.outputs import check_output
from fgalign.data.tokenize import token_spans
from fgalign.errors import InputError
from fgalign.models.reward import load_reward_model
from fgalign.runinfo import atomic_path, save_run_config

CMAP = "RdBu"
EOS_LABEL = "⟨eos⟩"


@dataclass
class ShowConfig:
    """Colour a response's tokens by the reward model's rewards."""

    rm: str
    """Reward model directory (from `fgalign train-rm`)."""
    prompt: str
    """The prompt text."""
    response: str
    """The response text (the RM's EOS is appended, as in training)."""
    out: str
    """Output file: .html (hover shows each value) or .png."""
    values: Literal["rewards", "prefix"] = "rewards"
    """rewards: r_t per token; prefix: the score S_t of each prefix (useful for a causal sequence RM)."""
    device: str = "cpu"
    """Where to run the RM."""
    overwrite: bool = False
    """Replace an existing output written by `fgalign show` (anything else is never replaced)."""


def _colors(values: Sequence[float], vmax: float | None = None) -> list[tuple[str, str]]:
    """(background, text) CSS colours per value, on a diverging map symmetric around 0."""
    import matplotlib
    from matplotlib.colors import Normalize, to_hex

    vmax = vmax or max((abs(v) for v in values), default=0.0) or 1.0
    cmap, norm = matplotlib.colormaps[CMAP], Normalize(-vmax, vmax)
    out = []
    for v in values:
        r, g, b, _ = cmap(norm(v))
        text = "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "#fff"  # readable on dark cells
        out.append((to_hex((r, g, b)), text))
    return out


def heatmap_html(tokens: Sequence[str], rewards: Sequence[float], vmax: float | None = None) -> str:
    """An HTML fragment: one <span> per token, coloured by its reward, value in `title` (hover).

    Tokens are shown as text pieces (whitespace kept); everything is HTML-escaped.
    """
    if len(tokens) != len(rewards):
        raise ValueError(f"{len(tokens)} tokens but {len(rewards)} rewards")
    spans = []
    for piece, value, (bg, fg) in zip(tokens, rewards, _colors(rewards, vmax)):
        spans.append(f'<span title="{value:+.4f}" style="background:{bg};color:{fg};border-radius:2px">'
                     f"{html.escape(piece)}</span>")
    return ('<div class="fgalign-heatmap" style="font-family:monospace;white-space:pre-wrap;line-height:1.8">'
            + "".join(spans) + "</div>")


def heatmap_png(tokens: Sequence[str], rewards: Sequence[float], path: str | Path, title: str = "") -> None:
    """The same picture with matplotlib: tokens laid out left to right, wrapped, plus a colour bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    vmax = max((abs(v) for v in rewards), default=0.0) or 1.0
    width_px, line_px = 900, 26
    fig = plt.figure(figsize=(width_px / 100, 3), dpi=100)
    ax = fig.add_axes((0, 0.25, 1, 0.6))
    ax.set_xlim(0, width_px)
    ax.set_ylim(-10 * line_px, line_px)
    ax.axis("off")
    renderer = fig.canvas.get_renderer()
    x, y = 10.0, 0.0
    for piece, (bg, fg) in zip(tokens, _colors(rewards, vmax)):
        text = ax.text(x, y, piece.replace("\n", "⏎"), family="monospace", color=fg, va="center",
                       bbox=dict(facecolor=bg, edgecolor="none", pad=1.5))
        w = text.get_window_extent(renderer).width
        if x + w > width_px - 10 and x > 10:  # wrap: move the token to the next line
            x, y = 10.0, y - line_px
            text.set_position((x, y))
        x += w + 1
    ax.set_ylim(y - line_px, line_px)
    bar_ax = fig.add_axes((0.25, 0.08, 0.5, 0.05))
    fig.colorbar(plt.cm.ScalarMappable(Normalize(-vmax, vmax), CMAP), cax=bar_ax, orientation="horizontal")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path)
    plt.close(fig)


def response_pieces(tokenizer, response: str) -> list[str]:
    """The response as one text piece per RM token (gaps such as spaces go with the next token) + EOS."""
    pieces, prev = [], 0
    for _, end in token_spans(tokenizer, response)[1]:
        pieces.append(response[prev:end])
        prev = max(prev, end)
    if pieces and prev < len(response):
        pieces[-1] += response[prev:]
    return pieces + [EOS_LABEL]


def run(cfg: ShowConfig) -> Path:
    out = Path(cfg.out)
    if out.suffix.lower() not in (".html", ".png"):
        raise InputError(f"expected a file name ending in .html or .png, got '{out.name}'", field="--out")
    check_output(out, "show", cfg.overwrite, "file")
    rm = load_reward_model(cfg.rm, cfg.device)
    scored = rm.score_texts([cfg.prompt], [cfg.response])
    values = (scored.token_rewards if cfg.values == "rewards" else scored.prefix_scores)[0]
    tokens = response_pieces(rm.tokenizer, cfg.response)
    values = values[: len(tokens)].tolist()
    caption = f"{rm.level} RM, sequence score {scored.sequence_score[0].item():+.3f}"
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".png":
            heatmap_png(tokens, values, tmp, title=caption)
        else:
            page = (f"<!doctype html><meta charset='utf-8'><title>fgalign reward heatmap</title>"
                    f"<p><b>prompt:</b> {html.escape(cfg.prompt)}</p><p>{html.escape(caption)}</p>"
                    + heatmap_html(tokens, values))
            tmp.write_text(page, encoding="utf-8")
    save_run_config(out, cfg, "show")
    print(f"show: {out}")
    return out
