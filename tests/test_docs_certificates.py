"""docs/certificates.md cannot drift: every number it quotes is recomputed here.

Each table of numbers on the page is preceded by ``<!-- checked: KIND -->`` (and, for some
kinds, a line ``Setting: `key=value, ...` `` with the parameters shared by its rows); tables
of formulas are marked ``<!-- formulas -->``. Every table must carry one of the two markers.
Each checked row is recomputed with the library and, independently, with exact rational
arithmetic or scipy, and must agree with the page to the precision printed there.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from poisoncert.bounds import certified_radius, delta, jia_certified_radius, jia_round
from poisoncert.certify import certify, dpa_certify
from poisoncert.stats import vote_bounds

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "certificates.md"
SCHEMES = ("without_replacement", "with_replacement", "binomial")


# ----------------------------------------------------------------------------- parsing
@dataclass
class Table:
    kind: str  # a checked kind, or "formulas"
    setting: dict
    rows: list[dict]
    line: int  # 1-based line of the table's header


def _cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [p.strip().replace("\\|", "|").replace("`", "").strip() for p in parts]


def _setting(line: str) -> dict:
    m = re.fullmatch(r"Setting: `([^`]*)`\.?", line.strip())
    assert m, f"malformed setting line: {line!r}"
    call = ast.parse(f"dict({m.group(1)})", mode="eval").body
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def parse_tables(text: str) -> list[Table]:
    """Every markdown table of ``text`` with its marker; fails on an unmarked table."""
    lines = text.splitlines()
    tables: list[Table] = []
    claimed: set[int] = set()
    for i, line in enumerate(lines):
        m = re.fullmatch(r"<!-- (?:checked: (\w+)|(formulas)) -->", line.strip())
        if not m:
            continue
        kind = m.group(1) or m.group(2)
        j, setting = i + 1, {}
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j < len(lines) and lines[j].startswith("Setting:"):
            setting = _setting(lines[j])
            j += 1
            while j < len(lines) and not lines[j].strip():
                j += 1
        assert j + 1 < len(lines) and lines[j].startswith("|"), \
            f"line {i + 1}: marker {kind!r} is not followed by a table"
        header = _cells(lines[j])
        assert re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[j + 1].strip()), \
            f"line {j + 2}: expected the table's separator row"
        rows, k = [], j + 2
        while k < len(lines) and lines[k].startswith("|"):
            cells = _cells(lines[k])
            assert len(cells) == len(header), f"line {k + 1}: {len(cells)} cells, not {len(header)}"
            rows.append(dict(zip(header, cells, strict=True)))
            k += 1
        assert rows, f"line {j + 1}: table without rows"
        tables.append(Table(kind, setting, rows, j + 1))
        claimed.add(j)
    for i, line in enumerate(lines):
        starts = line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))
        assert not starts or i in claimed, (
            f"docs/certificates.md line {i + 1}: table without a '<!-- checked: KIND -->' or "
            "'<!-- formulas -->' marker"
        )
    return tables


@pytest.fixture(scope="module")
def tables() -> dict[str, list[Table]]:
    assert DOC.is_file(), "docs/certificates.md is missing"
    out: dict[str, list[Table]] = {}
    for t in parse_tables(DOC.read_text(encoding="utf-8")):
        out.setdefault(t.kind, []).append(t)
    return out


def _agrees(printed: str, value: float) -> bool:
    """``value`` rounds to ``printed`` (half a unit of its last digit, plus float noise)."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return abs(float(printed) - value) <= 0.5 * 10.0**-decimals * (1 + 1e-9) + 1e-12


def _ints(cell: str) -> list[int]:
    return [int(x) for x in cell.split(",")]


def _opt(cell: str):
    return None if cell in ("-", "") else ast.literal_eval(cell)


# ---------------------------------------------------------------- exact arithmetic
def _QR(scheme: str, n: int, ns: int | None, p: Fraction | None):
    """Exact ``Q(w)`` and ``R(m)`` of the page's scheme table (``None`` for Q: below ns)."""
    if scheme == "without_replacement":
        return (lambda w: Fraction(math.comb(w, ns), math.comb(n, ns)) if w >= ns else None,
                lambda m: Fraction(math.comb(m, ns), math.comb(n, ns)))
    if scheme == "with_replacement":
        return (lambda w: Fraction(w, n) ** ns, lambda m: Fraction(m, n) ** ns)
    q = 1 - p
    return (lambda w: q ** (n - w), lambda m: q ** (n - m))


_ALLOWED = {"P1": (1, 0, 0), "P2": (0, 1, 0), "P3": (0, 0, 1), "P4": (1, 0, 1),
            "P5": (0, 1, 1), "P6": (1, 1, 1)}


def _exact_delta(scheme, n, ns, p, model, rho):
    """``max 1 + R(m) - 2 Q(|Omega|)`` over every attack (a, d, r) the model allows."""
    Q, R = _QR(scheme, n, ns, p)
    ins, dele, mod = _ALLOWED[model]
    best = Fraction(0)
    for a in range(rho + 1 if ins else 1):
        for d in range(rho - a + 1 if dele else 1):
            for r in range(rho - a - d + 1 if mod else 1):
                if d + r > n:
                    continue
                q = Q(n - d - r)
                if q is None:
                    return math.inf
                best = max(best, 1 + R(n + a - d) - 2 * q)
    return best


def _exact_delta_reduced(scheme, n, ns, p, model, rho):
    """The same maximum through the page's four formulas (fast enough for rho ~ 1000)."""
    Q, R = _QR(scheme, n, ns, p)
    k = min(rho, n)
    if model in ("P1",):
        return R(n + rho) - 1
    if model in ("P2", "P3", "P5"):
        q = Q(n - k)
        if q is None:
            return math.inf
        return 1 - q if model == "P2" else 2 - 2 * q
    vals = []
    for a in range(max(0, rho - n), rho + 1):
        q = Q(n - rho + a)
        if q is None:
            return math.inf
        vals.append(1 + R(n + a) - 2 * q)
    return max(vals)


def _check_radius_exactly(radius: int, gap: float, scheme, n, ns, p, model):
    """``radius`` is the largest rho with exact delta(rho) < gap (the float gap's value)."""
    g = Fraction(gap)
    if g <= 0:
        assert radius == -1
        return
    assert _exact_delta_reduced(scheme, n, ns, p, model, radius) < g
    if model in ("P2", "P3", "P5") and radius == n:
        return  # a radius of n covers every attack of these models
    assert _exact_delta_reduced(scheme, n, ns, p, model, radius + 1) >= g


def _scheme_args(scheme: str, n: int, ns, p):
    if scheme == "binomial" and p is None:
        return {"ns": ns}, Fraction(ns, n)
    if scheme == "binomial":
        return {"p": p}, Fraction(p)
    return {"ns": ns}, None


# ------------------------------------------------------------------------ the tables
EXPECTED_KINDS = ("delta", "radius", "corollary1", "votes", "unanimous", "jia", "dpa")


def test_every_kind_of_example_is_on_the_page(tables):
    for kind in EXPECTED_KINDS:
        assert kind in tables, f"no '<!-- checked: {kind} -->' table in docs/certificates.md"
    unknown = set(tables) - set(EXPECTED_KINDS) - {"formulas"}
    assert not unknown, f"no check is written for the table kinds {sorted(unknown)}"


def test_delta_table(tables):
    for t in tables["delta"]:
        n, ns = t.setting["n"], t.setting["ns"]
        for row in t.rows:
            model, rho = row["model"], int(row["rho"])
            for scheme in SCHEMES:
                kw, p = _scheme_args(scheme, n, ns, None)
                lib = delta(rho, scheme=scheme, n=n, model=model, **kw)
                exact = _exact_delta(scheme, n, ns, p, model, rho)
                where = f"line {t.line}: {model}, rho={rho}, {scheme}"
                assert _agrees(row[scheme], lib), f"{where}: page {row[scheme]}, library {lib}"
                assert _agrees(row[scheme], float(exact)), f"{where}: exact {float(exact)}"


def test_radius_table(tables):
    for t in tables["radius"]:
        for row in t.rows:
            scheme, n, model = row["scheme"], int(row["n"]), row["model"]
            ns, p = _opt(row["ns"]), _opt(row["p"])
            kw, pf = _scheme_args(scheme, n, ns, p)
            gap = float(row["gap"])
            got = certified_radius(gap, scheme=scheme, n=n, model=model, **kw)
            assert got == int(row["radius"]), f"line {t.line}: {row} gives {got}"
            _check_radius_exactly(got, gap, scheme, n, ns, pf, model)


def _printed_corollary1(n: int, ns: int, model: str, rho: int) -> Fraction:
    """The paper's Corollary 1 exactly as printed (pi inverted)."""
    def expr(m: int, w: int) -> Fraction:
        Cn, Cm, Cw = math.comb(n, ns), math.comb(m, ns), math.comb(w, ns)
        return 1 - Fraction(Cw, Cn) + Fraction(Cn, Cm) - Fraction(Cn * Cw, Cm**2)
    if model == "P1":  # rho insertions, Omega = D
        return expr(n + rho, n)
    assert model == "P6"
    return max(expr(m, max(m, n) - rho) for m in range(n - rho, n + rho + 1))


def test_corollary1_table(tables):
    (t,) = tables["corollary1"]
    n, ns = t.setting["n"], t.setting["ns"]
    for row in t.rows:
        model, rho = row["model"], int(row["rho"])
        printed = _printed_corollary1(n, ns, model, rho)
        exact = _exact_delta("without_replacement", n, ns, None, model, rho)
        lib = delta(rho, scheme="without_replacement", n=n, ns=ns, model=model)
        assert _agrees(row["paper's Corollary 1 as printed"], float(printed)), row
        col = "corrected (delta)"
        assert _agrees(row[col], float(exact)), (row, float(exact))
        assert _agrees(row[col], lib), (row, lib)
        if model == "P1":
            assert printed < exact  # the erratum: the printed bound under-states delta


def _cp_lower(k: int, T: int, beta: float) -> float:
    return 0.0 if k == 0 else float(stats.beta.ppf(beta, k, T - k + 1))


def _cp_upper(k: int, T: int, beta: float) -> float:
    return 1.0 if k == T else float(stats.beta.ppf(1 - beta, k + 1, T - k))


def _bounds_from_the_methods_table(counts, T, alpha, method, label):
    """p1_lower and p2_upper as the page's methods table defines them (scipy's beta)."""
    C = len(counts)
    order = sorted(range(C), key=lambda c: (-counts[c], c))  # ties to the smaller index
    c1 = order[0] if label is None else label
    others = [c for c in range(C) if c != c1]
    if method in ("bonferroni", "true_label"):
        p1 = _cp_lower(counts[c1], T, alpha / C if method == "bonferroni" else alpha)
        return p1, 1 - p1
    if method == "paper":
        p1 = _cp_lower(counts[c1], T, alpha / 2)
        return p1, min(1 - p1, _cp_upper(counts[order[1]], T, alpha / 2))
    beta = alpha / (2 * C) if method == "bonferroni_upper" else alpha / C
    p1 = _cp_lower(counts[c1], T, beta)
    return p1, min(1 - p1, max(_cp_upper(counts[c], T, beta) for c in others))


def test_votes_table(tables):
    for t in tables["votes"]:
        s = dict(t.setting)
        alpha = s.pop("alpha")
        for row in t.rows:
            counts, T, label = _ints(row["counts"]), int(row["T"]), _opt(row["label"])
            method = row["method"]
            cert = certify(np.array([counts]), alpha=alpha, method=method, T=T,
                           labels=None if label is None else [label], **s)
            where = f"line {t.line}: {row}"
            assert _agrees(row["p1_lower"], cert.p1_lower[0]), (where, cert.p1_lower[0])
            assert _agrees(row["p2_upper"], cert.p2_upper[0]), (where, cert.p2_upper[0])
            assert int(row["radius"]) == cert.radius[0], (where, cert.radius[0])
            p1, p2 = _bounds_from_the_methods_table(counts, T, alpha, method, label)
            assert _agrees(row["p1_lower"], p1), (where, p1)
            assert _agrees(row["p2_upper"], p2), (where, p2)
            kw, pf = _scheme_args(s["scheme"], s["n"], s.get("ns"), s.get("p"))
            _check_radius_exactly(int(cert.radius[0]), float(cert.gap[0]), s["scheme"], s["n"],
                                  s.get("ns"), pf, s["model"])


def test_unanimous_table(tables):
    (t,) = tables["unanimous"]
    s = t.setting
    for row in t.rows:
        counts = np.array([_ints(row["counts"])])
        assert counts[0].max() == s["T"] and counts.shape[1] == 2  # what the text says
        vb = vote_bounds(counts, alpha=s["alpha"], method=row["method"], T=s["T"])
        closed_form = 2 * (s["alpha"] / 2) ** (1 / s["T"]) - 1
        assert _agrees(row["gap"], vb.gap[0]) and _agrees(row["gap"], closed_form), row
        for scheme in SCHEMES:
            cert = certify(counts, scheme=scheme, n=s["n"], ns=s["ns"], model=s["model"],
                           alpha=s["alpha"], method=row["method"], T=s["T"])
            assert cert.radius[0] == int(row[scheme]), (row, scheme, cert.radius[0])
            _check_radius_exactly(int(cert.radius[0]), float(cert.gap[0]), scheme, s["n"],
                                  s["ns"], Fraction(s["ns"], s["n"]) if scheme == "binomial"
                                  else None, s["model"])


def test_jia_table(tables):
    (t,) = tables["jia"]
    for row in t.rows:
        n, ns = int(row["n"]), int(row["ns"])
        p1, p2 = float(row["p1_lower"]), float(row["p2_upper"])
        ours = certified_radius(p1 - p2, scheme="with_replacement", n=n, ns=ns, model="P6")
        jia = jia_certified_radius(p1, p2, n=n, ns=ns)
        r1, r2 = jia_round(p1, p2, n=n, ns=ns)
        N = n**ns
        e1 = Fraction(math.floor(Fraction(p1) * N), N)
        e2 = Fraction(math.ceil(Fraction(p2) * N), N)
        assert ours == int(row["radius (ours)"]), (row, ours)
        assert jia == int(row["radius (Jia et al.)"]), (row, jia)
        for col, lib, exact in (("p1_lower rounded", r1, e1), ("p2_upper rounded", r2, e2)):
            assert _agrees(row[col], float(lib)) and _agrees(row[col], float(exact)), (row, col)
        assert jia <= ours


def test_dpa_table(tables):
    (t,) = tables["dpa"]
    for row in t.rows:
        counts = _ints(row["counts"])
        c1 = min(range(len(counts)), key=lambda c: (-counts[c], c))
        slack = counts[c1] - max(counts[c] + (c < c1) for c in range(len(counts)) if c != c1)
        v = np.array([counts])
        p1 = dpa_certify(v, model="P1")
        p6 = dpa_certify(v, model="P6")
        unit = dpa_certify(v, model="P6", unit="dpa")
        assert int(row["prediction"]) == c1 == p1.prediction[0]
        assert int(row["slack"]) == slack == p1.slack[0]
        assert int(row["radius P1, P2 (operations)"]) == slack // 2 == p1.radius[0]
        assert int(row["radius P3-P6 (operations)"]) == slack // 4 == p6.radius[0]
        assert int(row["radius (DPA unit)"]) == slack // 2 == unit.radius[0]
        assert unit.radius_dpa[0] == slack // 2


# ------------------------------------------------------------------ claims in the text
def _printed_corollary_2_3(scheme: str, n: int, ns: int, rho: int) -> Fraction:
    """The paper's Corollaries 2 and 3 as printed: max over m in [n - rho, n + rho]."""
    vals = []
    for m in range(n - rho, n + rho + 1):
        if scheme == "with_replacement":
            v = 1 + Fraction(m, n) ** ns - 2 * Fraction(max(m, n) - rho, n) ** ns
        else:
            q = 1 - Fraction(ns, n)
            v = 1 + q ** (n - m) - 2 * q ** (min(n - m, 0) + rho)
        vals.append(v)
    return max(vals)


@pytest.mark.parametrize("scheme", ["with_replacement", "binomial"])
@pytest.mark.parametrize("n,ns", [(7, 2), (12, 3), (30, 5)])
def test_corollaries_2_and_3_as_printed_equal_the_p6_formula(scheme, n, ns):
    """The page says Corollaries 2 and 3 are right as printed (for rho <= n)."""
    p = Fraction(ns, n) if scheme == "binomial" else None
    kw = {"ns": ns}
    for rho in range(0, n + 1):
        printed = _printed_corollary_2_3(scheme, n, ns, rho)
        exact = _exact_delta(scheme, n, ns, p, "P6", rho)
        assert printed == exact, (rho, printed, exact)
        lib = delta(rho, scheme=scheme, n=n, model="P6", **kw)
        assert lib == pytest.approx(float(exact), rel=1e-12, abs=1e-14)


def test_binomial_p4_closed_form_holds_for_rho_up_to_n_only():
    """The page's closed form max(2 - 2 q^rho, q^-rho - 1) and its rho <= n condition."""
    n, p = 10, 0.01
    q = 1 - p
    for rho in range(0, n + 1):
        assert delta(rho, scheme="binomial", n=n, p=p, model="P4") == pytest.approx(
            max(2 - 2 * q**rho, q**-rho - 1), rel=1e-12, abs=1e-15)
    rho = 2 * n  # at most n modifications: the lower end of a is rho - n
    exact = float(_exact_delta_reduced("binomial", n, None, Fraction(p), "P4", rho))
    assert delta(rho, scheme="binomial", n=n, p=p, model="P4") == pytest.approx(exact, rel=1e-12)
    assert exact < max(2 - 2 * q**rho, q**-rho - 1)


def _named_objects(text: str) -> set[str]:
    names = set(re.findall(r"`(poisoncert(?:\.\w+)+)", text))
    names |= {f"poisoncert.bounds.{m}" for m in re.findall(r"`(SelectionBound\.\w+)", text)}
    names |= {f"poisoncert.certify.{m}" for m in
              re.findall(r"`((?:DPACertificate|Certificate)\.\w+)", text)}
    return names


def test_every_named_function_exists():
    text = DOC.read_text(encoding="utf-8")
    names = _named_objects(text)
    assert len(names) > 20
    for name in sorted(names):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                fields = {f.name for f in dataclasses.fields(obj)} if (
                    isinstance(obj, type) and dataclasses.is_dataclass(obj)) else set()
                assert hasattr(obj, attr) or attr in fields, \
                    f"docs/certificates.md names {name}: no {attr!r}"
                obj = getattr(obj, attr, None)
            break
        else:  # pragma: no cover - the package itself always imports
            pytest.fail(f"docs/certificates.md names {name}, which does not import")


def test_parser_rejects_an_unmarked_table_and_a_wrong_number():
    """The checks above can fail: an unmarked table and a changed digit are both caught."""
    with pytest.raises(AssertionError, match="without a"):
        parse_tables("text\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert _agrees("0.221484", 0.2214842513)
    assert not _agrees("0.221485", 0.2214842513)
    assert not _agrees("0.148446", float(_exact_delta("without_replacement", 100, 5, None,
                                                      "P1", 4)))


def _exact_error_rate(probs, T: int, alpha: float, method: str) -> float:
    """Probability over the votes that the bounds of ``method`` fail (two classes + abstain)."""
    p = np.array(probs, dtype=float)
    counts = np.array([(a, b) for a in range(T + 1) for b in range(T + 1 - a)])
    vb = vote_bounds(counts, alpha=alpha, method=method, T=T)
    c1 = vb.top_class
    fail = (vb.p1_lower > p[c1]) | (vb.p2_upper < p[1 - c1])
    pmf = stats.multinomial.pmf(np.c_[counts, T - counts.sum(1)], T, [*p, 1 - p.sum()])
    return float(pmf[fail].sum())


def test_paper_method_errs_more_than_alpha_with_abstentions():
    """The page: the paper's method is valid for two classes only without abstentions."""
    probs, T, alpha = (0.3, 0.3), 20, 0.1  # 40% of the base classifiers abstain
    assert _exact_error_rate(probs, T, alpha, "paper") > 1.2 * alpha
    assert _exact_error_rate(probs, T, alpha, "bonferroni") <= alpha
    assert _exact_error_rate((0.6, 0.4), T, alpha, "paper") <= alpha  # no abstentions


def test_every_scheme_alias_is_on_the_page():
    """Each spelling ``selection.scheme`` accepts is named on the page (as `alias`)."""
    from poisoncert.selection import PLAN_SCHEME_ALIASES

    text = DOC.read_text(encoding="utf-8")
    missing = [a for a in PLAN_SCHEME_ALIASES if f"`{a}`" not in text]
    assert not missing, missing
