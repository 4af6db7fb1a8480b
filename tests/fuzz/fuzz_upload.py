"""Coverage-guided fuzzing (atheris) of the upload path: validator, then decoder.

    pip install -e ".[fuzz]"
    python tests/fuzz/fuzz_upload.py -max_total_time=300 -max_len=65536 tests/fuzz/corpus

The corpus folder is created and seeded from tests/catalogue.py on first run. A crash is any
exception other than the project's typed 4xx errors; atheris writes the input to crash-<sha1>.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["deployments", "common"]):
    from common.errors import ClientError
    from common.contracts import InputGeometry
    from deployments.preprocessing import ImageDecoder
    from deployments.validation import ImageValidator

VALIDATOR = ImageValidator(max_upload_bytes=1 << 20, max_image_side=4096, max_image_pixels=4_000_000)
DECODER = ImageDecoder(InputGeometry(224, 0.875), max_pixels=4_000_000, max_side=4096)


def test_one_input(data: bytes) -> None:
    try:
        validated = VALIDATOR.validate(data)
        DECODER.decode(data, validated.format)
    except ClientError:
        pass


def seed_corpus(folder: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.catalogue import CASES

    folder.mkdir(parents=True, exist_ok=True)
    for index, case in enumerate(CASES):
        data = case.make()
        if len(data) <= 65536:
            (folder / f"seed-{index:03d}").write_bytes(data)


if __name__ == "__main__":
    corpus = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    for folder in corpus:
        if not folder.exists():
            seed_corpus(folder)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
