#!/usr/bin/env python3
"""Writes the protocol fixtures of `crates/pixel-ops/tests/fixtures/protocol/` from the official sources.

References (nothing here re-implements them; strings and functions are read from their own source with
`ast` and the functions executed as written):
  * the official Pixel Reasoner code (TIGER-AI-Lab/Pixel-Reasoner):
      curiosity_driven_rl/openrlhf/trainer/ppo_utils/experience_maker.py: the `SelectFrames` and
        `CropImageNormalized` tool classes (name, description, parameters), `parse_last_tool`,
        `execute_tool`, `crop_image_normalized`, and the observation format strings of `_generate_vllm`;
      curiosity_driven_rl/openrlhf/datasets/prompts_dataset.py: the `templates["vcot"]` user guideline;
  * qwen-agent (the version checked: 0.0.26): `FN_CALL_TEMPLATE` in
    qwen_agent/llm/fncall_prompts/nous_fncall_prompt.py and the key order of `BaseTool.function` in
    qwen_agent/tools/base.py. The two lines of `NousFnCallPrompt.preprocess_fncall_messages` that render
    the block (`json.dumps(f, ensure_ascii=False)` per tool, joined by newlines) are mirrored below;
  * verl's image_zoom_in_tool schema (volcengine/verl,
    examples/sglang_multiturn/config/tool_config/image_zoom_in_tool_config.yaml), optional.
  * qwen-vl-utils `smart_resize` for the size a crop is shown at (the official `resize_cropped`).

Regenerate (from the repository root; needs Pillow, numpy, qwen-vl-utils, PyYAML):
    git clone https://github.com/TIGER-AI-Lab/Pixel-Reasoner /tmp/Pixel-Reasoner
    pip install --no-deps --target /tmp/qwen-agent qwen-agent==0.0.26
    git clone https://github.com/volcengine/verl /tmp/verl      # optional: the DeepEyes schema
    python3 scripts/gen_protocol_fixtures.py \
        --pixel-reasoner /tmp/Pixel-Reasoner --qwen-agent /tmp/qwen-agent/qwen_agent \
        --verl-tool-config /tmp/verl/examples/sglang_multiturn/config/tool_config/image_zoom_in_tool_config.yaml

Outputs (all small text/JSON):
  system_prompt_pixel_reasoner.txt   the system message with the Nous tool block, byte-exact
  system_prompt_deepeyes.txt         the same block for verl's image_zoom_in_tool (if --verl-tool-config)
  tools_block_unicode.json           a tool with non-ASCII text rendered with ensure_ascii False / True
  user_text.json                     question -> first user-turn text
  observation_texts.json             the official observation format strings, filled for a few cases
  parse_cases.json                   model turns -> official require_tool and parse_last_tool result
  execute_cases.json                 calls on images/videos of given sizes -> official execute_tool result
"""

import argparse
import ast
import contextlib
import functools
import io
import json
import math
import os
import sys
import textwrap

import numpy as np
from PIL import Image
from qwen_vl_utils import smart_resize

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "pixel-ops", "tests", "fixtures", "protocol")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def find_class(tree, name):
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise SystemExit(f"class {name} not found")


def find_function(tree, name):
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise SystemExit(f"function {name} not found")


def tool_from_class(cls):
    """(name, description, parameters) of a qwen-agent tool class, read from its source."""
    name = None
    for dec in cls.decorator_list:
        if isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "register_tool":
            name = ast.literal_eval(dec.args[0])
    description = parameters = None
    for item in cls.body:
        if isinstance(item, ast.FunctionDef) and item.name == "description":
            ret = next(n for n in ast.walk(item) if isinstance(n, ast.Return)).value
            # `"""...""".strip()` as written in the class.
            assert isinstance(ret, ast.Call) and ret.func.attr == "strip", ast.dump(ret)
            description = ast.literal_eval(ret.func.value).strip()
        if isinstance(item, ast.Assign) and getattr(item.targets[0], "id", "") == "parameters":
            parameters = ast.literal_eval(item.value)
    assert name and description and parameters, cls.name
    return name, description, parameters


def base_tool_function_keys(base_py):
    """Key order of qwen-agent's `BaseTool.function` dict (commented keys are not in the AST)."""
    cls = find_class(ast.parse(read(base_py)), "BaseTool")
    for item in cls.body:
        if isinstance(item, ast.FunctionDef) and item.name == "function":
            ret = next(n for n in ast.walk(item) if isinstance(n, ast.Return)).value
            return [k.value for k in ret.keys]
    raise SystemExit("BaseTool.function not found")


def class_method(source, cls, name):
    """An official tool class's method, compiled from its own source, bound to `self=None`."""
    for item in cls.body:
        if isinstance(item, ast.FunctionDef) and item.name == name:
            code = textwrap.dedent(ast.get_source_segment(source, item, padded=True))
            ns = {}
            exec(compile(code, f"<official {cls.name}.{name}>", "exec"), ns)
            return functools.partial(ns[name], None)
    raise SystemExit(f"{cls.name}.{name} not found")


def module_constant(tree, name):
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
            return node.value
    raise SystemExit(f"constant {name} not found")


def exec_functions(source, tree, names, namespace):
    """Executes the official functions `names` (their own source text) in `namespace`."""
    for name in names:
        node = find_function(tree, name)
        code = ast.get_source_segment(source, node)
        exec(compile(code, f"<official {name}>", "exec"), namespace)
    return namespace


def format_strings(tree):
    """The observation texts of `_generate_vllm`: `"...".format(...)` constants and the error f-string."""
    crop = frames = error = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value.startswith("\nHere is the cropped image"):
                crop = node.value
            if node.value.startswith("\nHere are the selected frames"):
                frames = node.value
        if isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
            text = "".join(parts)
            if text.startswith("\nExecution error:"):
                error = text
    assert crop and frames and error
    return crop, frames, error


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pixel-reasoner", required=True, help="a checkout of TIGER-AI-Lab/Pixel-Reasoner")
    ap.add_argument("--qwen-agent", required=True, help="the qwen_agent package directory")
    ap.add_argument("--verl-tool-config", help="verl's image_zoom_in_tool_config.yaml")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)

    em_path = os.path.join(args.pixel_reasoner, "curiosity_driven_rl/openrlhf/trainer/ppo_utils/experience_maker.py")
    pd_path = os.path.join(args.pixel_reasoner, "curiosity_driven_rl/openrlhf/datasets/prompts_dataset.py")
    em_src = read(em_path)
    em = ast.parse(em_src)
    nous = ast.parse(read(os.path.join(args.qwen_agent, "llm/fncall_prompts/nous_fncall_prompt.py")))
    fn_call_template = ast.literal_eval(module_constant(nous, "FN_CALL_TEMPLATE"))
    keys = base_tool_function_keys(os.path.join(args.qwen_agent, "tools/base.py"))

    def function_dict(name, description, parameters):
        values = {"name": name, "description": description, "parameters": parameters}
        return {k: values[k] for k in keys}

    def render_block(functions, ensure_ascii=False):
        # NousFnCallPrompt.preprocess_fncall_messages: these two statements.
        tool_descs = [{"type": "function", "function": f} for f in functions]
        tool_descs = "\n".join([json.dumps(f, ensure_ascii=ensure_ascii) for f in tool_descs])
        return fn_call_template.format(tool_descs=tool_descs)

    # The official RL code lists the tools in this order: ['crop_image_normalized', 'select_frames'].
    tools = [tool_from_class(find_class(em, c)) for c in ("CropImageNormalized", "SelectFrames")]
    functions = [function_dict(*t) for t in tools]
    system = "You are a helpful assistant." + "\n\n" + render_block(functions)
    with open(os.path.join(OUT, "system_prompt_pixel_reasoner.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(system)

    if args.verl_tool_config:
        import yaml

        with open(args.verl_tool_config, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
        fn = cfg["tools"][0]["tool_schema"]["function"]
        deepeyes = "You are a helpful assistant." + "\n\n" + render_block([function_dict(fn["name"], fn["description"], fn["parameters"])])
        with open(os.path.join(OUT, "system_prompt_deepeyes.txt"), "w", encoding="utf-8", newline="") as f:
            f.write(deepeyes)

    unicode_tool = function_dict(
        "measure_größe",
        "Mißt «Größe» — 尺寸 😀 \"quoted\" back\\slash\ttab",
        {"type": "object", "properties": {"x": {"type": "number", "description": "é"}}, "required": ["x"]},
    )
    with open(os.path.join(OUT, "tools_block_unicode.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "ensure_ascii_false": render_block([unicode_tool], ensure_ascii=False),
                "ensure_ascii_true": render_block([unicode_tool], ensure_ascii=True),
            },
            f,
            indent=1,
            ensure_ascii=True,
        )

    # User turn: prompts_dataset.py builds `q + trigger` with trigger = f"\n\n{templates[system_prompt]}".
    pd = ast.parse(read(pd_path))
    tmpl_call = module_constant(pd, "templates")
    templates = {kw.arg: ast.literal_eval(kw.value) for kw in tmpl_call.keywords}
    questions = ["What is the number on the red sign?", "Which frame shows the cat?\nA. 1\nB. 2", "", "Ünïcode ❓"]
    with open(os.path.join(OUT, "user_text.json"), "w", encoding="utf-8") as f:
        json.dump([{"question": q, "text": q + f"\n\n{templates['vcot']}"} for q in questions], f, indent=1)

    crop_fmt, frames_fmt, error_fmt = format_strings(em)
    with open(os.path.join(OUT, "observation_texts.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "crop": [{"w": w, "h": h, "text": crop_fmt.format(w, h)} for w, h in [(812, 588), (29, 29), (3000, 28)]],
                "frames": [
                    {"w": w, "h": h, "a": a, "b": b, "text": frames_fmt.format(w, h, a, b)}
                    for w, h, a, b in [(448, 252, 1, 3), (640, 360, 4, 11)]
                ],
                "error": [{"message": m, "text": error_fmt.format(m)} for m in ["Cropped image is too small: 10x40", ""]],
            },
            f,
            indent=1,
        )

    ns = exec_functions(em_src, em, ["parse_last_tool", "crop_image_normalized", "execute_tool"], {
        "json": json, "np": np, "Image": Image,
        "tool_start": "<tool_call>", "tool_end": "</tool_call>", "do_controlled_rectify": True,
    })
    tool_end = "</tool_call>"

    def tc(obj_text):
        return "<tool_call>\n" + obj_text + "\n</tool_call>"

    turns = [
        "The answer is \\boxed{B}.",
        "Zoom.\n" + tc('{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1}}'),
        "Zoom.\n" + tc('{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1}}') + "<|im_end|>",
        tc('{"name": "crop_image_normalized", "arguments": {"bbox_2d": [10, 20, 300, 400], "target_image": 2}}') + " and more text",
        tc('{"name": "select_frames", "arguments": {"target_frames": [1, 5, 9]}}') + "\n",
        tc('{"name": "select_frames", "arguments": {"target_frames": [1]}}') + "\nthen\n" + tc('{"name": "select_frames", "arguments": {"target_frames": [2, 3]}}'),
        tc('{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1}'),
        tc('{"name": "crop_image_normalized" "arguments": {}}'),
        tc("not json at all"),
        tc(""),
        "no opening tag " + tool_end,
        tc('{"name": "select_frames", "arguments": {"target_frames": [1, 2]}, "extra": 1}'),
        tc('{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.5, 0.5, 0.9, 0.9], "target_image": 1.0}}'),
        tc('  {"name": "select_frames", "arguments": {"target_frames": [16]}}  '),
        "<tool_call>" + tc('{"name": "select_frames", "arguments": {"target_frames": [4]}}'),
        tc("[" * 100 + "]" * 100),
        "text <|im_end|> inside " + tc('{"name": "select_frames", "arguments": {"target_frames": [2]}}'),
        tc('{"name": "crop_image_normalized", "arguments": {"bbox_2d": [1e400, 0, 1, 1], "target_image": 1}}'),
    ]
    parse_cases = []
    for t in turns:
        rsp = t.replace("<|im_end|>", "")
        last_string = rsp[-len(tool_end) - 10:] if len(rsp) > len(tool_end) + 10 else rsp
        require_tool = last_string.endswith(tool_end)
        case = {"turn": t, "require_tool": require_tool}
        if require_tool:
            try:
                call = ns["parse_last_tool"](rsp)
                case["python_ok"] = True
            except Exception as e:  # noqa: BLE001 - record what the official code would show
                case["python_ok"] = False
                case["python_error"] = f"{type(e).__name__}: {e}"[:300]
            else:
                try:
                    json.dumps(call, allow_nan=False)
                    case["parsed"] = call
                except ValueError:  # e.g. 1e400 parsed to inf: not representable in the fixture
                    case["parsed_not_finite"] = True
        parse_cases.append(case)
    with open(os.path.join(OUT, "parse_cases.json"), "w", encoding="utf-8") as f:
        json.dump(parse_cases, f, indent=1)

    # execute_tool on blank images of given sizes (crop geometry depends only on sizes).
    def blank(w, h):
        return Image.new("RGB", (w, h))

    eval_min, eval_max = 256 * 28 * 28, 5120 * 28 * 28
    image_calls = [
        ("crop_image_normalized", {"bbox_2d": [0.4, 0.35, 0.55, 0.5], "target_image": 1}),
        ("crop_image_normalized", {"bbox_2d": [0.0, 0.0, 1.0, 1.0], "target_image": 1}),
        ("crop_image_normalized", {"bbox_2d": [100, 50, 300, 200], "target_image": 1}),
        ("crop_image_normalized", {"bbox_2d": [0.5, 0.5, 0.5, 0.5], "target_image": 2}),
        ("crop_image_normalized", {"bbox_2d": [0.9, 0.1, 0.2, 0.5], "target_image": 1}),
        ("crop_image_normalized", {"bbox_2d": [0.1, 0.9, 0.5, 0.2], "target_image": 1}),
        ("crop_image_normalized", {"bbox_2d": [0.99, 0.99, 0.999, 0.999], "target_image": 1}),
        ("crop_image_normalized", {"bbox_2d": [0.2, 0.2, 0.4, 0.4], "target_image": 3}),
        ("crop_image_normalized", {"bbox_2d": [0.2, 0.2, 0.4, 0.4], "target_image": 7}),
        ("select_frames", {"target_frames": [1, 2]}),
    ]
    video_calls = [
        ("select_frames", {"target_frames": [1, 5, 9]}),
        ("select_frames", {"target_frames": [16]}),
        ("select_frames", {"target_frames": list(range(1, 10))}),
        ("select_frames", {"target_frames": [1, 17]}),
        ("select_frames", {"target_frames": [3, 3, 2]}),
        ("crop_image_normalized", {"bbox_2d": [0.2, 0.2, 0.6, 0.6], "target_image": 3}),
        ("crop_image_normalized", {"bbox_2d": [0.2, 0.2, 0.6, 0.6], "target_image": 17}),
    ]
    video_plus_calls = [
        ("crop_image_normalized", {"bbox_2d": [0.2, 0.2, 0.6, 0.6], "target_image": 2}),
        ("crop_image_normalized", {"bbox_2d": [0.2, 0.2, 0.6, 0.6], "target_image": 1}),
        ("crop_image_normalized", {"bbox_2d": [0.2, 0.2, 0.6, 0.6], "target_image": 3}),
    ]

    # The RL code passes the tool classes' own `call` (`self.operations[tool_name].call`).
    operations = {
        "crop_image_normalized": class_method(em_src, find_class(em, "CropImageNormalized"), "call"),
        "select_frames": class_method(em_src, find_class(em, "SelectFrames"), "call"),
    }

    def run(setup, images, is_video, calls):
        out = []
        for name, a in calls:
            case = {"setup": setup, "name": name, "arguments": a}
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # the official code prints debug lines
                    res = ns["execute_tool"](images, images, a, name, is_video, function=operations[name])
                if name == "select_frames":
                    frames, message = res
                    case["ok"] = {"frames": len(frames), "size": list(frames[0].size)}
                else:
                    w, h = res.size
                    rh, rw = smart_resize(h, w, factor=28, min_pixels=eval_min, max_pixels=eval_max)
                    case["ok"] = {"size": [w, h], "shown": [rw, rh]}
            except Exception as e:  # noqa: BLE001
                case["error"] = str(e)
            out.append(case)
        return out

    frames16 = [blank(448, 252) for _ in range(16)]
    cases = []
    cases += run({"images": [[812, 588]]}, [blank(812, 588)], False, image_calls)
    cases += run({"images": [[1000, 750], [300, 400]]}, [blank(1000, 750), blank(300, 400)], False, image_calls)
    cases += run({"video": [448, 252, 16]}, [frames16], True, video_calls)
    cases += run({"video": [448, 252, 16], "images": [[448, 252], [448, 252]]},
                 [frames16, blank(448, 252), blank(448, 252)], True, video_plus_calls)
    with open(os.path.join(OUT, "execute_cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, indent=1)
    print(f"wrote {OUT}: {len(parse_cases)} parse cases, {len(cases)} execute cases", file=sys.stderr)


if __name__ == "__main__":
    main()
