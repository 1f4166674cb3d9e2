"""Child process for tests/test_state.py: restore decoder states in a fresh interpreter.

    python tests/state_helper.py VECTOR.ivf K1 STATE1 [K2 STATE2 ...]

For each pair, ``DecoderState.from_bytes`` the file, decode IVF frames K.. of VECTOR with a
``Decoder`` built from it, and print one JSON object ``{"K": [md5 lines...], ...}``.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import decode_lines  # noqa: E402


def main(argv: list[str]) -> None:
    from codec.decoder import Decoder
    from codec.state import DecoderState

    vector, pairs = Path(argv[0]), argv[1:]
    result = {}
    for k, state_file in zip(pairs[0::2], pairs[1::2]):
        state = DecoderState.from_bytes(Path(state_file).read_bytes())
        result[k] = decode_lines(vector, Decoder(state), start=int(k))
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
