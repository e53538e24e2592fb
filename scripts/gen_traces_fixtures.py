#!/usr/bin/env python3
"""Writes `crates/pixel-traces/tests/fixtures/official_prompts.json` from the official data loader.

Reference (not re-implemented here): TIGER-AI-Lab/Pixel-Reasoner,
`curiosity_driven_rl/openrlhf/datasets/prompts_dataset.py`. The module is imported from the given checkout
and `PromptDataset.preprocess_data` is executed as written on a few RL records (with the `vcot` prompt the
RL recipe uses), recording the user message it builds (`json.loads(prompt)[0]`) and the `qid` entry it
appends.

Regenerate (from the repository root; needs torch and tqdm, which the module imports):
    git clone https://github.com/TIGER-AI-Lab/Pixel-Reasoner /tmp/Pixel-Reasoner
    python3 scripts/gen_traces_fixtures.py --pixel-reasoner /tmp/Pixel-Reasoner

Output: one small JSON file, a list of {"record": ..., "chat": [...]} cases.
"""

import argparse
import importlib.util
import json
import pathlib
import types

RECORDS = [
    {"qid": "img-list", "question": "What is on the sign?", "image": ["images/a.jpg"], "answer": "B"},
    {"qid": 7, "question": "Compare the two images.", "image": ["x/1.png", "", "x/2.png"], "answer": 3},
    {"qid": "img-str", "question": "How many cars?", "image": "images/cars.jpg", "gt_answer": "4"},
    {"qid": "video", "question": "What happens first?\nA. run\nB. jump", "is_video": True,
     "image": ["v/1.jpg", "v/2.jpg", "v/3.jpg", "v/4.jpg"], "answer": "A"},
    {"qid": "text", "question": "What is 2 + 2?", "image": None, "answer": "4"},
    {"qid": "text-empty", "question": "Name a prime.", "image": "", "answer": "2"},
    {"qid": "unicode", "question": "Was steht auf dem Schild? \u00e9\u00e8 \u4e2d\u6587", "image": ["\u00fc.jpg"], "answer": "x"},
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixel-reasoner", required=True, type=pathlib.Path, help="official repository checkout")
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path("crates/pixel-traces/tests/fixtures/official_prompts.json"))
    args = parser.parse_args()

    source = args.pixel_reasoner / "curiosity_driven_rl/openrlhf/datasets/prompts_dataset.py"
    spec = importlib.util.spec_from_file_location("official_prompts_dataset", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    # preprocess_data only reads `self.processor` (to take the VLM branch).
    fake_self = types.SimpleNamespace(processor=object())
    cases = []
    for record in RECORDS:
        data = json.loads(json.dumps(record))  # a private copy: the loader may mutate it
        prompt = module.PromptDataset.preprocess_data(fake_self, data, None, "question", None, "vcot")
        cases.append({"record": record, "chat": json.loads(prompt)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
