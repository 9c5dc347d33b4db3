"""The README's generated blocks (``<!-- name:begin -->`` ... ``<!-- name:end -->``): each is rendered from a
committed table by the module that owns the table through :func:`render`; ``make readme`` regenerates them and a
test compares them. No notebook writes the README."""

from pathlib import Path
from typing import Iterable, Sequence

from .atomic import atomic_write_text
from .errors import ConfigError
from .paths import REPO_ROOT

README = REPO_ROOT / "README.md"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def md_table(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A markdown table; ``|`` and line breaks inside cells are escaped."""
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def render(name: str, header: str, body: str) -> str:
    """The block ``name`` (markers included): the header line (what generated it, from which table), then ``body``."""
    begin, end = markers(name)
    return f"{begin}\n{header}\n\n{body}\n{end}"


def split(text: str, name: str, where: str = "README") -> tuple[str, str, str]:
    """(text before, the block with its markers, text after); a clear error unless exactly one block."""
    begin, end = markers(name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ConfigError(f"{where} must contain exactly one {begin} ... {end} block (in that order); fix: restore "
                          "the two marker lines")
    head, rest = text.split(begin)
    block, tail = rest.split(end)
    return head, begin + block + end, tail


def block(readme, name: str) -> str:
    return split(Path(readme).read_text(encoding="utf-8"), name, str(readme))[1]


def replace(readme, name: str, new: str) -> bool:
    """Put ``new`` (markers included) in place of the README's block ``name``; True when the file changed."""
    readme = Path(readme)
    head, old, tail = split(readme.read_text(encoding="utf-8"), name, str(readme))
    if new == old:
        return False
    atomic_write_text(readme, head + new + tail)
    return True
