"""Paths of the repository and profiles built from its folded testdata."""

from pathlib import Path

from topn import ProfileData

EXAMPLE = Path(__file__).resolve().parent.parent
REPO = EXAMPLE.parent.parent
# The sink is built against the 0.1.0 contract (see build.sh), which the daemon still loads.
WIT = REPO / "wit" / "0.1.0"
TESTDATA = REPO / "testdata"


def folded_profile(text: str, labels: list[tuple[str, str]], type_name: str = "cpu") -> ProfileData:
    """Builds a profile from folded stacks (`a;b;c 12`, root first) the way the daemon does:
    one frame per distinct function, stacks as indices into them."""
    frames: list[str] = []
    index: dict[str, int] = {}
    samples = []
    for line in text.splitlines():
        if not line.strip():
            continue
        stack_text, value = line.rsplit(" ", 1)
        stack = []
        for name in stack_text.split(";"):
            if name not in index:
                index[name] = len(frames)
                frames.append(name)
            stack.append(index[name])
        samples.append((stack, int(value)))
    return ProfileData(
        type_name=type_name,
        labels=labels,
        start_ns=1_700_000_000_000_000_000,
        end_ns=1_700_000_010_000_000_000,
        frames=frames,
        samples=samples,
    )
