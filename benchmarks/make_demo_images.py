"""Write the few text images bundled with ocrc for `ocrc demo` (frontend/models/images/):
6 labelled demo images and 8 calibration images, rendered by the clean-set renderer from seeds
that the training and evaluation sets do not use. Run from the repo root:
    python -m benchmarks.make_demo_images
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.ocr.datasets import generate

OUT = Path(__file__).resolve().parents[1] / "frontend" / "models" / "images"
DEMO_SEED, CALIB_SEED = 770001, 770002


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):
        old.unlink()
    for i, s in enumerate(generate("clean", 6, DEMO_SEED)):
        s.image.convert("L").save(OUT / f"demo_{i:02d}_{s.text}.png", optimize=True)
    for i, s in enumerate(generate("clean", 8, CALIB_SEED)):
        s.image.convert("L").save(OUT / f"calib_{i:02d}.png", optimize=True)
    print(f"wrote {len(list(OUT.glob('*.png')))} images to {OUT.relative_to(Path.cwd())}")


if __name__ == "__main__":
    main()
