"""Pages at scale (issue 21 item 6): the store's change counter, page data cached under it (and
recomputed after any commit), the aggregates rewritten for big stores giving the same answers, and
the heavy pages rendering a 20k-row workspace within a generous bound."""
from __future__ import annotations

import importlib.util
import math
import random
import sys
import threading
import time

import pytest

from tests.helpers import ROOT


def _seed_function():
    """bench/bench_ui.py's seeding (one transaction per table), the same rows the benchmark renders."""
    sys.path.insert(0, str(ROOT / "bench"))  # bench_ui imports benchlib as a sibling
    spec = importlib.util.spec_from_file_location("bench_ui", ROOT / "bench" / "bench_ui.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.seed


# -- the change counter --------------------------------------------------------------------------
def test_change_counter_moves_on_every_commit_and_only_then(store):
    a = store.change_counter()
    store.query("SELECT COUNT(*) FROM comparisons")  # reads move nothing
    assert store.change_counter() == a
    store.execute("INSERT INTO settings (key, value_json) VALUES (?,?)", ("g1", "1"))
    b = store.change_counter()
    assert b != a
    # another thread's connection of this process
    t = threading.Thread(target=lambda: store.execute(
        "INSERT INTO settings (key, value_json) VALUES (?,?)", ("g2", "2")))
    t.start()
    t.join()
    c = store.change_counter()
    assert c != b
    # another Store object (as another process would have): its commit moves this one's counter
    from cai_core.store import Store

    other = Store(store.workspace)
    other.execute("INSERT INTO settings (key, value_json) VALUES (?,?)", ("g3", "3"))
    other.close()
    d = store.change_counter()
    assert d != c
    assert store.change_counter() == d
    # a rolled-back transaction changed nothing (on SQLite the counter says so; PostgreSQL's WAL position
    # may move anyway: a false "changed", which the contract allows, never a false "unchanged")
    with pytest.raises(RuntimeError):
        with store.tx() as conn:
            conn.execute("INSERT INTO settings (key, value_json) VALUES (?,?)", ("g4", "4"))
            raise RuntimeError("abort")
    if not getattr(store, "postgres", False):
        assert store.change_counter() == d
    assert store.scalar("SELECT COUNT(*) FROM settings WHERE key=?", ("g4",)) == 0


_CALLS: list[str] = []


def count_settings(store, prefix: str) -> int:
    """A module-level page-data function for store_cached; counts its calls."""
    _CALLS.append(prefix)
    return int(store.scalar("SELECT COUNT(*) FROM settings WHERE key LIKE ?", (prefix + "%",)) or 0)


def test_store_cached_recomputes_after_a_commit_and_not_before(ws):
    from ui.common import get_store, store_cached

    calls = _CALLS
    calls.clear()
    store = get_store()
    first = store_cached(count_settings, "scale-")
    assert store_cached(count_settings, "scale-") == first and len(calls) == 1  # served from the cache
    assert store_cached(count_settings, "other-") == 0 and len(calls) == 2    # other arguments, other entry
    store.execute("INSERT INTO settings (key, value_json) VALUES (?,?)", ("scale-x", "1"))
    assert store_cached(count_settings, "scale-") == first + 1 and len(calls) == 3


# -- the rewritten aggregates give the same answers ----------------------------------------------
def test_vectorised_bootstrap_gives_the_per_resample_intervals():
    from cai_core.evaluation.stats import bootstrap_ci
    from cai_core.reliability.metrics import _acc, _kappa

    rng = random.Random(7)
    for n, labels in ((1, "AB"), (9, "A"), (60, "AB"), (500, ("A", "B", "tie"))):
        items = [{"label": rng.choice(labels), "gold": rng.choice(("A", "B", "tie"))} for _ in range(n)]
        for stat in (_acc, _kappa):
            slow = bootstrap_ci(items, lambda xs, s=stat: s(xs), n_boot=200, seed=3)  # no .batch: one list each
            fast = bootstrap_ci(items, stat, n_boot=200, seed=3)
            assert fast == slow or all(math.isnan(x) for x in fast + slow), (n, stat.__name__, fast, slow)


def test_bootstrap_cis_draws_once_and_gives_each_bootstrap_ci():
    from cai_core.evaluation.stats import bootstrap_ci, bootstrap_cis
    from cai_core.reliability.metrics import _acc, _kappa

    rng = random.Random(11)
    for n in (0, 1, 7, 300):
        items = [{"label": rng.choice(("A", "B", "tie")), "gold": rng.choice(("A", "B"))} for _ in range(n)]
        stats = (_acc, _kappa, lambda xs: sum(i["label"] == "A" for i in xs) / len(xs))
        for got, stat in zip(bootstrap_cis(items, stats, n_boot=150, seed=5), stats):
            want = bootstrap_ci(items, stat, n_boot=150, seed=5)
            assert got == want or all(math.isnan(x) for x in got + want), (n, got, want)
    values = [rng.random() for _ in range(50)]
    assert bootstrap_cis(values, [None], n_boot=100, seed=2) == [bootstrap_ci(values, n_boot=100, seed=2)]


def _judge_rows(rng, n_ids, raters, principles, *, repeat=False):
    rows = []
    for i in range(n_ids):
        for rater in raters:
            for principle in principles:
                for _ in range(2 if repeat and rng.random() < 0.3 else 1):
                    p = rng.random()
                    rows.append({"id": str(i), "rater": rater, "principle": principle, "p_a": p,
                                 "label": "A" if p > 0.5 else "B", "p_a_ab": rng.random(), "p_a_ba": rng.random(),
                                 "len_a": rng.randrange(1, 80), "len_b": rng.randrange(1, 80),
                                 "category": rng.choice(("x", "y"))})
    return rows


def test_reliability_report_shortcuts_equal_the_full_computation():
    """One judge: the combined verdict and the judge's row reuse one match and one agreement; nothing
    merged per (judge, id): the per-principle match is the per-judge one. Both equal computing each."""
    import json

    from cai_core.reliability.metrics import agreement, breakdown, json_safe, match, reliability_report

    rng = random.Random(3)
    gold = [{"id": str(i), "label": rng.choice(("A", "B", "tie")), "rater": "g"} for i in range(0, 120, 2)]
    for raters, principles, repeat in ((["j"], ["p1"], False), (["j"], ["p1", "p2"], False), (["j"], ["p1"], True),
                                       (["j", "k"], ["p1"], False), (["j", "k"], ["p1", "p2"], True)):
        rows = _judge_rows(rng, 120, raters, principles, repeat=repeat)
        report = reliability_report(rows, gold, n_boot=200, seed=4)
        per_judge = match(rows, gold, ("rater", "id"))
        combined = match([dict(r, rater="combined") for r in rows], gold, ("rater", "id"))
        full = {**agreement(combined, n_boot=200, seed=4),
                "judges": breakdown(per_judge, "rater", n_boot=200, seed=4),
                "by_principle": breakdown(match(rows, gold, ("rater", "id", "principle")), ("rater", "principle"),
                                          n_boot=200, seed=4)}
        same = lambda x: json.dumps(json_safe(x), sort_keys=True)  # noqa: E731  (NaN == NaN)
        for key, value in full.items():
            assert same(report[key]) == same(value), (raters, principles, repeat, key)


def test_reliability_report_of_10k_gold_items_stays_cheap():
    """The Judge Reliability page's first render at 100k rows is one such report (issue 21: < 2 s). Its
    CPU time (not wall: steady on a loaded box) at 10k items with 1000 resamples is ~0.5 s; a bound of
    8 s catches a regression to per-resample Python lists or to anything quadratic, not noise."""
    from cai_core.reliability.metrics import reliability_report

    rng = random.Random(5)
    rows = _judge_rows(rng, 10_000, ["j"], ["p1"])
    for r, k in zip(rows, range(len(rows))):
        r["principle"] = f"p{k % 8}"
    gold = [{"id": str(i), "label": rng.choice(("A", "B", "tie")), "rater": "bench"} for i in range(10_000)]
    t = time.process_time()
    report = reliability_report(rows, gold, n_boot=1000, seed=0)
    cpu = time.process_time() - t
    assert report["n"] == 10_000 and len(report["by_principle"]) == 8
    assert cpu < 8.0, f"reliability_report of 10k items took {cpu:.1f} CPU s"


def _python_principle_stats(store, batch=None):
    rows = store.query("SELECT s.principle_id, s.violation, s.revision, s.edit_words, s.refusal_introduced, t.batch "
                       "FROM trajectory_steps s JOIN trajectories t ON t.id=s.trajectory_id")
    out: dict = {}
    for r in rows:
        if batch and r["batch"] != batch:
            continue
        d = out.setdefault(r["principle_id"], {"rounds": 0, "violations": 0, "revisions": 0, "edits": []})
        d["rounds"] += 1
        d["violations"] += r["violation"] == 1
        d["revisions"] += r["revision"] is not None
        d["edits"].append(r["edit_words"])
    return out


def test_principle_stats_match_a_plain_count(store):
    from cai_core.supervised.revision import principle_stats

    _seed_function()(store, 300)
    store.execute("UPDATE trajectory_steps SET revision=NULL, violation=NULL WHERE trajectory_id % 5 = 0")
    for batch in (None, "batch-3"):
        want = _python_principle_stats(store, batch)
        got = {r["principle_id"]: r for r in principle_stats(store, batch=batch)}
        assert set(got) == set(want)
        for pid, w in want.items():
            g = got[pid]
            assert (g["rounds"], g["violations"], g["revisions"]) == (w["rounds"], w["violations"], w["revisions"])
            assert g["mean_edit_words"] == round(sum(w["edits"]) / len(w["edits"]), 2)


def test_queue_total_past_the_end_and_rows_with_texts(store):
    from cai_core.rlaif.preferences import queue

    _seed_function()(store, 200)
    everything = queue(store, status="all", order="oldest", limit=500)
    assert everything["total"] == 200 and len(everything["rows"]) == 200
    assert [r["id"] for r in everything["rows"]] == sorted(r["id"] for r in everything["rows"])
    assert all(r["prompt"] and r["response_a"] and r["ai_p_a"] is not None for r in everything["rows"])
    page = queue(store, status="unlabelled", limit=7, offset=3)
    assert page["total"] == 200 - 20 and len(page["rows"]) == 7  # seed labels a tenth
    past = queue(store, status="unlabelled", limit=7, offset=10_000)
    assert past == {"rows": [], "total": 180}


# -- the pages on a big store -------------------------------------------------------------------
@pytest.mark.slow
def test_heavy_pages_render_20k_rows_within_bounds(ws, tiny_model_dir, monkeypatch):
    """Seeded like bench_ui (20k trajectories and comparisons, 40k judgments, 2k human labels); every
    data-heavy page renders without an exception, the second render (page data cached) well under
    the first, and both within a generous bound for a shared 2-core box."""
    from streamlit.testing.v1 import AppTest

    from cai_core.store import open_store

    store = open_store(ws)
    if getattr(store, "postgres", False):
        pytest.skip("the bench seeding writes SQLite SQL directly")
    _seed_function()(store, 20_000)
    monkeypatch.setenv("CAI_MODEL", str(tiny_model_dir))
    times = {}
    for page in ("30_Critique_and_Revise", "40_Preferences", "50_Judge_Reliability", "90_Notebook"):
        runs = []
        for _ in range(2):
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
            at.switch_page(f"pages/{page}.py")
            t = time.perf_counter()
            at.run()
            runs.append(time.perf_counter() - t)
            assert not at.exception, (page, at.exception[0].value)
            assert at.title, page
        times[page] = runs
    assert all(first < 60 and warm < 15 for first, warm in times.values()), times
    # the cache answers the second render: the store-heavy pages are not recomputed
    assert times["50_Judge_Reliability"][1] < times["50_Judge_Reliability"][0], times


def test_store_cached_refuses_functions_whose_name_is_not_unique(ws):
    from cai_core.errors import CaiError
    from ui.common import store_cached

    with pytest.raises(CaiError, match="module-level"):
        store_cached(lambda store: 1)
