#!/usr/bin/env python3
"""Generate the answer-matching fixture of `pixel-reward` from independent Python references.

Regenerate (needs `pip install math-verify`; CI never runs this):

    python3 scripts/gen_reward_fixtures.py \
        > crates/pixel-reward/tests/fixtures/answer_cases.json

Every case is a full model response, its reference answers (and options for multiple choice), and:

- `extracted`: the final answer found by an independent implementation of the extraction rule (last complete
  `\\boxed{}` / `\\fbox{}`, else the last `<answer>...</answer>`, else the first line after the last `Answer:`);
  `null` when there is no marker (the whole response is then compared, as the official code does).
- `math_verify`: `math_verify.verify` on that answer, called the way the official Pixel-Reasoner reward calls it
  (lower-cased, its `normalize_answer` rewrites, `\\boxed{}`-wrapped, a `%` reference also tried without `%`,
  prediction first), best over the references; 1.0 or 0.0.
- `official`: the whole released reward rule re-implemented here (its own extraction loop and multi-span rule,
  -1 for parse failures), for information only.
- `anls`: for ANLS cases, a reference ANLS (RRC scorer: lower-case, trim, collapse spaces, NL < 0.5).
- `expected`: the score `pixel_reward` must give: ANLS cases the reference ANLS; other cases the label written
  with the case (what a correct matcher says). Where `expected` differs from `math_verify`, `disagreement`
  states why; the script fails on an unexplained disagreement.
"""

import json
import random
import re
import sys
import warnings

warnings.filterwarnings("ignore")
import logging  # noqa: E402

logging.disable(logging.CRITICAL)

from math_verify import parse, verify  # noqa: E402

SEED = 20260525
rng = random.Random(SEED)

SPECIAL = ["<|im_end|>", "<|endoftext|>", "<|im_start|>"]


# --------------------------------------------------------------------------- extraction (independent)
def last_box(text):
    """Content of the last complete \\boxed{..}/\\fbox{..} (or brace-less `\\boxed 5`), else None."""
    best = None
    for kw in ("\\boxed", "\\fbox"):
        start = 0
        while True:
            i = text.find(kw, start)
            if i < 0:
                break
            start = i + 1
            j = i + len(kw)
            if j < len(text) and text[j].isascii() and text[j].isalpha():
                continue
            rest = text[j:]
            stripped = rest.lstrip()
            content = None
            if stripped.startswith("{"):
                depth, k = 0, 0
                while k < len(stripped):
                    c = stripped[k]
                    if c == "\\":
                        k += 2
                        continue
                    if c == "{":
                        depth += 1
                    elif c == "}":
                        depth -= 1
                        if depth == 0:
                            content = stripped[1:k]
                            break
                    k += 1
            elif len(stripped) < len(rest):
                m = re.match(r"[^\s$]+", stripped)
                content = m.group(0) if m else None
            if content is not None and (best is None or i > best[0]):
                best = (i, content)
    return None if best is None else best[1]


def extract(text):
    found = last_box(text)
    if found is None:
        for open_pos in [m.start() for m in re.finditer(re.escape("<answer>"), text)][::-1]:
            body = text[open_pos + len("<answer>"):]
            close = body.find("</answer>")
            if close >= 0:
                found = body[:close]
                break
    if found is None:
        pos = text.lower().rfind("answer:")
        if pos >= 0:
            lines = [ln.strip() for ln in text[pos + len("answer:"):].splitlines()]
            lines = [ln for ln in lines if ln]
            found = lines[0] if lines else None
    if found is None:
        return None
    for tok in SPECIAL:
        found = found.replace(tok, "")
    return found.strip()


# --------------------------------------------------------------------------- the official call pattern
def official_normalize(ans):
    # The rewrites of the released `normalize_answer` (described, not copied).
    ans = ans.replace("dfrac", "frac").replace("\\text", "").replace("\\varnothing", "\\emptyset")
    return ans.replace("minutes", "").replace("cm", "")


def expand_refs(refs):
    refs = [r.lower() for r in refs]
    for r in refs:
        if "%" in r:
            if r.replace("%", "") not in refs:
                refs.insert(0, r.replace("%", ""))
            break
    return refs


def mv_equal(pred, ref):
    try:
        a = parse("\\boxed{" + official_normalize(pred) + "}")
        b = parse("\\boxed{" + official_normalize(ref) + "}")
        if len(a) == 0 or len(b) == 0:
            return 0.0
        return 1.0 if verify(a, b) else 0.0
    except Exception:
        return 0.0


def math_verify_score(answer, refs):
    pred = answer.lower()
    return max([mv_equal(pred, r) for r in expand_refs(refs)] + [0.0])


def official_rule(response, refs):
    """The released rule as behaviour: lower-cased response; per reference: boxed tail, then the first
    one-line <answer> match ('Answer:' can never match the lower-cased text), else the whole response;
    parse failure -1; then the multi-span fallback (reference parts, with the first 7 and last 1 characters
    cut as the released slicing does, as substrings of the text after the last 'boxed')."""
    sol = response.lower()
    res = 0.0
    for gt in expand_refs(refs):
        b_src = "\\boxed{" + official_normalize(gt) + "}"
        try:
            b = parse(b_src)
        except Exception:
            b = []
        if len(b) == 0:
            res = -1.0
        else:
            done = False
            for ind in ("\\boxed", "<answer>", "answer:"):
                if ind not in sol or ind == "answer:":
                    continue
                if ind == "<answer>":
                    m = re.search("<answer>(.*?)</answer>", sol)
                    if not m:
                        continue
                    nsol = "\\boxed{" + m.group(1) + "}"
                else:
                    nsol = sol[sol.rindex(ind):].strip()
                res = official_verify(official_normalize(nsol), b)
                if res > 0.99:
                    done = True
                    break
            if not done:
                res = official_verify(official_normalize(sol), b)
        if res > 0.5:
            return res
        if "," in gt:
            parts = [x.strip() for x in gt[len("\\boxed{"):-1].split(",")]
            k = sol.rfind("boxed")
            if k >= 0:
                tail = "\\" + sol[k:]
                if all(p in tail for p in parts):
                    return 1.0
    return res


def official_verify(nsol, b):
    try:
        a = parse(nsol)
        if len(a) == 0:
            return -1.0
        return 1.0 if verify(a, b) else 0.0
    except Exception:
        return -1.0


# --------------------------------------------------------------------------- reference ANLS
def lev(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a):
        cur = [i + 1]
        for j, cb in enumerate(b):
            cur.append(min(prev[j] + (ca != cb), prev[j + 1] + 1, cur[j] + 1))
        prev = cur
    return prev[len(b)]


def ref_anls(pred, refs, threshold=0.5):
    p = " ".join(pred.strip().lower().split())
    best = 0.0
    for r in refs:
        r = " ".join(r.strip().lower().split())
        n = max(len(p), len(r))
        nl = 0.0 if n == 0 else lev(p, r) / n
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


# --------------------------------------------------------------------------- response wrappers
LEADS = [
    "The image shows a street scene. After zooming in on the sign, the detail is clear.\n\n",
    "Let me look closer at the region.\n\nThe cropped image shows the answer.\n\n",
    "",
    "Step 1: find the object. Step 2: read it.\n\n",
]


def wrap(answer, style=None):
    style = style if style is not None else rng.choice(["boxed", "boxed", "boxed", "dollar", "tag", "prefix"])
    lead = rng.choice(LEADS)
    if style == "boxed":
        return f"{lead}Therefore, the answer is \\boxed{{{answer}}}.<|im_end|>"
    if style == "dollar":
        return f"{lead}So the final answer is $\\boxed{{{answer}}}$<|im_end|>"
    if style == "tag":
        return f"{lead}<answer>{answer}</answer><|im_end|>"
    if style == "prefix":
        return f"{lead}Answer: {answer}\n<|im_end|>"
    raise ValueError(style)


cases = []


def add(group, response, refs, expected, why=None, kind="auto", options=None):
    cases.append(dict(group=group, kind=kind, response=response, references=list(refs),
                      options=options or [], label=float(expected), why=why))


# Reasons, stated once (docs/reward.md explains each).
WHY_SPELLING = "choice letter spelled with a delimiter or words ('B.', 'B)', 'option B', 'B. Sheep'): math_verify reads it as text or a product of symbols"
WHY_OPTION_TEXT = "option text given instead of the letter: math_verify has no access to the options"
WHY_WORDS = "number words (zero..twenty): math_verify reads 'three' as the product t*h*r*e*e"
WHY_UNITS = "a unit after the number: the official normalize_answer strips only 'cm' and 'minutes'; we accept any unit word"
WHY_ANAGRAM = "math_verify parses words as products of one-letter symbols, so anagrams / reordered words compare equal"
WHY_MULTISPAN = "multi-span: every reference part present in the prediction (the official rule, on whole words), which math_verify's set comparison does not do"
WHY_NO_MARKER = "no answer marker: math_verify searches the free text for the last number/expression; we compare the whole response and do not guess"
WHY_PUNCT = "text answer with a trailing period / quotes / markdown: we strip them, math_verify keeps them"
WHY_PREFIX = "a prefix such as 'approximately' or 'x =' before a number"
WHY_PERCENT = "percent sign vs fraction"
WHY_FRACTION = "a fraction written with '/' or a trailing decimal point"
WHY_TEXT_MATH = "text read as a math expression (letters become symbols, '-' a minus, ':' a ratio, '/' a division), so math_verify equates or separates it differently from string equality"
WHY_TRUNCATED = "the last box is truncated; we fall back to the last complete box, math_verify sees no box"

# ---- multiple choice
OPTIONS = [
    ["Lion", "Sheep", "Tiger", "Elephant"],
    ["Red", "Green", "Blue", "Yellow", "Black"],
    ["2", "3", "4", "5"],
    ["a cat", "a dog", "a bird", "a fish"],
]
SPELLINGS = ["{L}", "({L})", "{L}.", "{L})", "{L}:", "[{L}]", "option {L}", "Option {L}", "choice {L}",
             "({L}) {T}", "{L}. {T}", "{L}: {T}", "{l}", "({l})"]
for opts in OPTIONS:
    for sp in SPELLINGS:
        gi = rng.randrange(len(opts))
        g = "ABCDE"[gi]
        text = opts[gi]
        correct = rng.random() < 0.6
        pi = gi if correct else (gi + 1 + rng.randrange(len(opts) - 1)) % len(opts)
        p = "ABCDE"[pi]
        pred = sp.format(L=p, l=p.lower(), T=opts[pi])
        add("mc", wrap(pred), [g], correct, WHY_SPELLING)
for opts in OPTIONS:
    for gi in range(len(opts)):
        g = "ABCDE"[gi]
        pi = gi if rng.random() < 0.5 else (gi + 1) % len(opts)
        add("mc_option_text", wrap(opts[pi]), [g], pi == gi, WHY_OPTION_TEXT, options=opts)
# reference given as option text, prediction as letter
for opts in OPTIONS[:2]:
    for gi in range(len(opts)):
        p = "ABCDE"[gi] if gi % 2 == 0 else "ABCDE"[(gi + 1) % len(opts)]
        add("mc_ref_text", wrap(f"({p})"), [opts[gi]], gi % 2 == 0, WHY_OPTION_TEXT, options=opts)
# hedges between two letters name no choice
for pred in ["(B) or (C)", "B) Sheep, C) Tiger", "(B)/(C)", "option B or (C)"]:
    add("mc_hedge", wrap(pred, "boxed"), ["B"], False)
# articles are not letters when there are no options
add("mc_article", wrap("a cat"), ["A"], False)
add("mc_article", wrap("A"), ["(A)"], True)

# ---- numbers
def fmt_thousands(n):
    return f"{n:,}"


for _ in range(24):
    n = rng.randrange(1000, 5_000_000)
    ok = rng.random() < 0.7
    pred_n = n if ok else n + rng.choice([1, 10, 1000])
    if rng.random() < 0.5:
        add("number_thousands", wrap(fmt_thousands(pred_n)), [str(n)], ok)
    else:
        add("number_thousands", wrap(str(pred_n)), [fmt_thousands(n)], ok)
for _ in range(20):
    v = rng.randrange(1, 999) / rng.choice([10, 100, 4])
    ok = rng.random() < 0.7
    pv = v if ok else v + rng.choice([0.01, 0.1, 1.0])
    pred = f"{pv:.4f}".rstrip("0") + rng.choice(["0", "00", ""]) if ok else f"{pv:.4f}".rstrip("0")
    if pred.endswith("."):
        pred += "0"
    add("number_decimal", wrap(pred), [repr(v)], ok)
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
for i in range(0, 21):
    ok = i % 3 != 2
    w = WORDS[i] if ok else WORDS[(i + 1) % 21]
    w = w.capitalize() if i % 4 == 0 else w
    if i % 2 == 0:
        add("number_words", wrap(w), [str(i)], ok, WHY_WORDS)
    else:
        add("number_words", wrap(str(i) if ok else str(i + 1)), [WORDS[i]], ok, WHY_WORDS)
for unit in ["cm", "minutes", "meters", "km", "apples", "people", "years", "kg", "\\text{ cm}", "\\text{ minutes}", "mm", "seconds"]:
    n = rng.randrange(2, 300)
    ok = rng.random() < 0.75
    add("number_units", wrap(f"{n if ok else n + 2} {unit}"), [str(n)], ok, WHY_UNITS)
    add("number_units", wrap(f"{n if ok else n + 3}"), [f"{n} {unit}"], ok, WHY_UNITS)
for pred, ref, ok, why in [
    ("50\\%", "50", True, WHY_PERCENT), ("50%", "50%", True, None), ("50", "50%", True, WHY_PERCENT),
    ("0.5", "50%", True, WHY_PERCENT), ("50%", "0.5", True, WHY_PERCENT), ("0.5", "50", False, WHY_PERCENT),
    ("25 percent", "25%", True, WHY_PERCENT), ("12.5\\%", "12.5", True, WHY_PERCENT), ("13%", "12%", False, None),
    ("\\frac{3}{4}", "0.75", True, None), ("\\dfrac{3}{4}", "0.75", True, None), ("3/4", "0.75", True, WHY_FRACTION),
    ("\\frac{1}{3}", "1/3", True, WHY_FRACTION), ("-3", "3", False, None), ("−3", "-3", True, WHY_TEXT_MATH),
    ("12.0", "12", True, None), ("12.", "12", True, WHY_FRACTION), ("012", "12", True, None),
    ("3.14159", "3.14", False, None), ("approximately 12", "12", True, WHY_PREFIX), ("about 7", "7", True, WHY_PREFIX),
    ("x = 7", "7", True, WHY_PREFIX), ("7 or 8", "7", False, WHY_TEXT_MATH), ("78", "7", False, None),
    ("1,2", "12", False, None), ("twenty-one", "21", False, None), ("2 3", "23", False, WHY_TEXT_MATH),
    ("1.5", "3/2", True, WHY_FRACTION), ("$1,000$", "1000", True, None), ("1 000", "1000", False, WHY_TEXT_MATH),
    ("90^\\circ", "90", True, None), ("90°", "90", True, WHY_UNITS), ("45 degrees", "45", True, WHY_UNITS),
    ("0", "zero", True, WHY_WORDS), ("ten", "10", True, WHY_WORDS), ("10", "ten", True, WHY_WORDS),
]:
    add("number_misc", wrap(pred, "boxed"), [ref], ok, why)

# ---- multi-span
SPANS = [
    ["troubles", "the siege of krishnapur"], ["red", "blue"], ["paris", "london", "rome"],
    ["apple", "banana"], ["monday", "friday"], ["north america", "europe"], ["cats", "dogs", "birds"],
    ["john smith", "mary jones"], ["tea", "coffee"], ["2019", "2020"],
]
for parts in SPANS:
    ref = ", ".join(parts)
    add("multispan", wrap(", ".join(p.title() for p in parts)), [ref], True, WHY_MULTISPAN)
    add("multispan", wrap(", ".join(reversed(parts))), [ref], True, WHY_MULTISPAN)
    add("multispan", wrap(" and ".join(parts)), [ref], True, WHY_MULTISPAN)
    add("multispan", wrap(parts[0]), [ref], False, WHY_MULTISPAN)
    add("multispan", wrap(", ".join(parts + ["extra"])), [ref], True, WHY_MULTISPAN)
    add("multispan", wrap(", ".join(p + "s" for p in parts)), [ref], False, WHY_MULTISPAN)

# ---- exact text
TEXTS = ["yes", "no", "sheep", "blue", "stop sign", "new york", "coca cola", "left", "right", "umbrella",
         "bicycle", "the red car", "nike", "starbucks", "kitchen"]
for t in TEXTS:
    add("text", wrap(t.title()), [t], True, WHY_TEXT_MATH)
    add("text", wrap(f"\\text{{{t}}}"), [t], True, WHY_TEXT_MATH)
    other = rng.choice([x for x in TEXTS if x != t])
    add("text", wrap(other), [t], False, WHY_ANAGRAM)
for pred, ref, ok, why in [
    ("silent", "listen", False, WHY_ANAGRAM), ("york new", "new york", False, WHY_ANAGRAM),
    ("dog", "god", False, WHY_ANAGRAM), ("the sheep", "sheep", False, None), ("Sheep.", "sheep", True, WHY_PUNCT),
    ('"Sheep"', "sheep", True, WHY_PUNCT), ("**Blue**", "blue", True, WHY_PUNCT), ("blue ", "blue", True, None),
    ("Coca-Cola", "coca cola", False, WHY_TEXT_MATH), ("stopsign", "stop sign", False, WHY_ANAGRAM),
    ("\\textbf{Yes}", "yes", True, WHY_TEXT_MATH), ("\\mathrm{Nike}", "nike", True, WHY_TEXT_MATH),
]:
    add("text_misc", wrap(pred, "boxed"), [ref], ok, why)

# ---- extraction
for resp, refs, ok, why in [
    ("First I thought \\boxed{3}, but after zooming the count is \\boxed{4}.", ["4"], True, None),
    ("First I thought \\boxed{3}, but after zooming the count is \\boxed{4}.", ["3"], False, None),
    ("\\boxed{\\frac{1}{2}} is the ratio", ["0.5"], True, None),
    ("The answer: \\fbox{7}", ["7"], True, WHY_NO_MARKER),
    ("So \\boxed {B}.", ["B"], True, None),
    ("So $\\boxed 5$.", ["5"], True, None),
    ("I answered \\boxed{A} and then \\boxed{B", ["A"], True, WHY_TRUNCATED),
    ("<answer>\n12\n</answer>", ["12"], True, None),
    ("<answer>1</answer> reconsidering... <answer>2</answer>", ["2"], True, None),
    ("Final Answer: 12 apples\nThanks", ["12"], True, WHY_UNITS),
    ("ANSWER: (C)", ["C"], True, None),
    ("The number of birds is 5.", ["5"], False, WHY_NO_MARKER),
    ("5", ["5"], True, None),
    ("Yes", ["yes"], True, None),
    ("I cannot tell.", ["4"], False, None),
    ("\\boxed{}", ["4"], False, None),
    ("\\boxed{\\{1,2\\}}", ["1, 2"], True, WHY_MULTISPAN),
    ("\\boxed{B<|im_end|>}", ["B"], True, None),
]:
    add("extraction", resp, refs, ok, why)

# ---- ANLS (InfographicsVQA / DocVQA style)
DOC = [
    ["Denver Broncos", "Denver R. Broncos"], ["12/15/88"], ["Dear Dr. Lobo", "Dr. Lobo"], ["$3.5 million"],
    ["United Kingdom", "UK"], ["42%"], ["Coca-Cola Company"], ["march 2019"], ["Social media"],
    ["Twitter"], ["18-24 years"], ["Facebook, Instagram"], ["1 in 4"], ["New South Wales"], ["Healthcare workers"],
]


def typo(s, k):
    chars = list(s)
    for _ in range(k):
        if not chars:
            break
        i = rng.randrange(len(chars))
        op = rng.choice(["sub", "del", "ins"])
        if op == "sub":
            chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
        elif op == "del":
            del chars[i]
        else:
            chars.insert(i, rng.choice("abcdefghijklmnopqrstuvwxyz"))
    return "".join(chars)


for refs in DOC:
    base = rng.choice(refs)
    preds = [base, base.upper(), "  " + base.replace(" ", "   ") + " ", typo(base, 1), typo(base, 2),
             typo(base, 4), "something else entirely"]
    for p in preds:
        if "}" in p or "{" in p:
            continue
        score = ref_anls(p, refs)
        add("anls", wrap(p, "boxed"), refs, score, kind="anls")


# --------------------------------------------------------------------------- score and check
out = []
unexplained = []
for i, c in enumerate(cases):
    extracted = extract(c["response"])
    answer = extracted if extracted is not None else c["response"].strip()
    mv = math_verify_score(answer, c["references"])
    official = official_rule(c["response"], c["references"])
    case = dict(id=i, group=c["group"], kind=c["kind"], response=c["response"], references=c["references"],
                options=c["options"], extracted=extracted, math_verify=mv, official=official)
    if c["kind"] == "anls":
        case["anls"] = ref_anls(answer, c["references"])
        case["expected"] = case["anls"]
        case["disagreement"] = None
    else:
        case["expected"] = c["label"]
        if mv == c["label"]:
            case["disagreement"] = None
        elif c["why"] is not None:
            case["disagreement"] = c["why"]
        else:
            case["disagreement"] = None
            unexplained.append(case)
    out.append(case)

if unexplained:
    for u in unexplained:
        print("UNEXPLAINED", json.dumps(u), file=sys.stderr)
    sys.exit(1)

n_dis = sum(1 for c in out if c["disagreement"])
summary = dict(
    cases=len(out),
    agree_with_math_verify=sum(1 for c in out if c["kind"] != "anls" and not c["disagreement"]),
    deliberate_disagreements=n_dis,
    anls_cases=sum(1 for c in out if c["kind"] == "anls"),
    official_rule_agrees=sum(1 for c in out if c["kind"] != "anls" and max(c["official"], 0.0) == c["expected"]),
)
print(f"summary: {summary}", file=sys.stderr)
json.dump(dict(seed=SEED, generator="scripts/gen_reward_fixtures.py", summary=summary, cases=out),
          sys.stdout, indent=1, ensure_ascii=False)
sys.stdout.write("\n")
