"""Training steps per second: cached frozen-space features vs running the frozen towers
live each step (what training without `ulip2 features` would do); or, with --compare amp,
float32 steps vs bf16 autocast (training.trainer.autocast_dtype: a CPU with bf16
instructions, or a GPU). Same encoder, same batch, same process. Ends with one JSON line.

    python bench/train.py [--space minilm] [--config pointbert-small] [--batch 32] [--steps 4]
    python bench/train.py --compare amp --config pointbert-lite --batch 64 --steps 4

--space openclip:ViT-B-32:none runs an image+text tower of real size with random weights
(the compute is what matters here); ULIP-2's ViT-bigG-14 towers are about 30x heavier.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

os.environ["ULIP2_TEXT_CACHE"] = "0"  # live means live: no text cache either

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="minilm")
    parser.add_argument("--config", default="pointbert-small")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--compare", choices=("live", "amp"), default="live",
                        help="the baseline: live towers (default), or float32 against bf16 autocast")
    args = parser.parse_args()

    from PIL import Image

    from core.models import get_config
    from core.spaces import load_space
    from training.features import TripletFeatures
    from training.trainer import Trainer, TrainConfig

    space = load_space(args.space)
    rng = np.random.default_rng(0)
    n_objects = args.batch * args.steps
    n_points = get_config(args.config).num_points
    captions = [[f"object {i} view {v}, a {['red', 'wooden', 'metal'][v % 3]} thing" for v in range(2)]
                for i in range(n_objects)]
    images = [[Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)) for _ in range(2)]
              for _ in range(min(n_objects, args.batch))] if space.has_images else None
    points = [rng.random((n_points, 6), dtype=np.float32) for _ in range(n_objects)]
    texts = [space.embed_text(c) for c in captions]
    image_feats = [space.embed_images(images[i % len(images)]) for i in range(n_objects)] if images else None
    features = TripletFeatures.from_lists(space.name, [str(i) for i in range(n_objects)], points, texts, image_feats)
    config = TrainConfig(encoder=args.config, epochs=1, batch_size=args.batch, warmup_epochs=0)

    class LiveTrainer(Trainer):
        """Looks up nothing: embeds each step's chosen captions (and views) with the towers."""

        def _sample(self, index, epoch):
            points, _, _ = super()._sample(index, epoch)
            pick = np.random.default_rng([self.config.seed, epoch, index, 1])
            text = space.embed_text([captions[index][pick.integers(2)]])[0]
            image = space.embed_images([images[index % len(images)][pick.integers(2)]])[0] if images else None
            return points, text, image

    figures = {"space": space.name, "config": args.config, "batch": args.batch, "steps": args.steps,
               "threads": torch.get_num_threads()}
    if args.compare == "amp":
        from training.trainer import autocast_dtype

        figures["amp_dtype"] = str(autocast_dtype(torch.device("cpu")))
        runs = (("amp", Trainer, config), ("float32", Trainer, dataclasses.replace(config, amp=False)))
    else:
        runs = (("cached", Trainer, config), ("live", LiveTrainer, config))
    for round_ in range(2):  # in turn, twice: the second round's figures are kept (warm caches)
        for name, cls, run_config in runs:
            trainer = cls(features, run_config, "unused")  # train_epoch writes nothing
            start = time.perf_counter()
            trainer.train_epoch()
            figures[f"{name}_steps_per_s"] = round(args.steps / (time.perf_counter() - start), 3)
    (a, _, _), (b, _, _) = runs
    figures[f"{a}_vs_{b}_steps_ratio"] = round(figures[f"{a}_steps_per_s"] / figures[f"{b}_steps_per_s"], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
