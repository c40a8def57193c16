"""A griffe extension for the API reference: the package's docstrings use reStructuredText markup
(``code``, :func:`name`, ``::`` literal blocks, ``.. math::``), which the docs site renders as
Markdown. This rewrites that markup to Markdown before the docstrings are parsed; the docstrings
themselves stay as they are (``help()`` and IDEs show them unchanged)."""
import re

from griffe import Extension

ROLE = re.compile(r":(?:func|meth|class|attr|mod|data|exc|obj|math):`(~?)\.?([^`]+)`")
LITERAL = re.compile(r"``([^`]+)``")


def rst_to_markdown(text: str) -> str:
    """Inline roles and literals to code spans; ``::`` literal blocks and ``.. math::`` to fenced blocks."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        math = stripped == ".. math::"
        literal = line.rstrip().endswith("::") and not math
        if math or literal:
            indent = len(line) - len(line.lstrip())
            if literal:
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    out.append(_inline(head) + ":")
            j, block = i + 1, []
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
                block.append(lines[j])
                j += 1
            while block and not block[-1].strip():
                block.pop()
            body = [b for b in block if b.strip()]
            if body:
                inner = min(len(b) - len(b.lstrip()) for b in body)
                pad = " " * indent
                if out and out[-1].strip():
                    out.append("")
                out.append(pad + ("```text" if math else "```python"))
                while not block[0].strip():
                    block.pop(0)
                out += [pad + b[inner:] if b.strip() else "" for b in block]
                out += [pad + "```", ""]
                i = j
                continue
        out.append(_inline(line))
        i += 1
    return "\n".join(out)


def _inline(line: str) -> str:
    # :class:`~a.b.C` shows as `C` (RST's tilde), :func:`a.f` as `a.f`
    line = ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", line)
    return LITERAL.sub(r"`\1`", line)


class RstToMarkdown(Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
