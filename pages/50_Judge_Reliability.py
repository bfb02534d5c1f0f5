"""Judge reliability: how far can the AI labels be trusted? Agreement with gold labels (with CIs),
position and length bias, calibration, a blind spot check, and every disagreement side by side."""
from __future__ import annotations

import json

import streamlit as st

from cai_core.constitution.versions import list_constitutions
from cai_core.errors import CaiError
from cai_core.summaries.headlines import HEADLINE_N_BOOT, reliability_headlines, too_few
from cai_core.reliability.paper_evals import PAPER_DATA_ENV, PAPER_EVAL_SETS, paper_data_dir, paper_eval_path
from cai_core.reliability.gold import (
    best_covered,
    comparison_meta,
    gold_coverage,
    gold_sets,
    import_paper_eval,
    judge_keys,
    judge_labels,
    judge_vs_gold,
    load_gold,
    load_gold_pairs,
)
from cai_core.reliability.labels import parse_labels
from cai_core.jobs import list_jobs
from cai_core.jobs.specs import EvalJudgeSpec
from cai_core.summaries.overview import workspace_counts
from cai_core.rlaif.judges import STYLES
from cai_core.rlaif.preferences import add_label
from cai_core.reliability.metrics import agreement, collapse, json_safe, match, stratified_sample
from ui.command_preview import form_spec, start_from_form
from ui.common import (active_model, get_store, job_progress, pick_current, read_upload, rerun_when_jobs_end,
                       show_error, store_cached)
from ui.markdown import md_escape
from ui.pair import show_pair
from ui.reliability import (accuracy_figure, agreement_table, calibration_figure, ci_text, confusion_figure,
                            group_figure, judge_words, metric_cards, num, pct)

PAPER_SETS = list(PAPER_EVAL_SETS)
UPLOADED = "uploaded label file"
PAGE_SIZE = 20

store = get_store()
st.title("Judge Reliability")
st.caption("Before training on AI labels, check them: agreement with human (gold) labels with 95% bootstrap "
           "intervals, position and length bias, calibration of P(A), and a quick blind spot check.")


@st.cache_data(max_entries=16, show_spinner="Computing agreement and bootstrap intervals...")
def cached_report(judges: tuple[str, ...], gold_json: str, version: tuple, n_boot: int) -> dict:
    return json_safe(judge_vs_gold(get_store(), list(judges), json.loads(gold_json), n_boot=n_boot))


def data_version() -> str:
    return store.change_counter()  # moves on every commit (a relabel or a re-judged pair too, not only new rows)


# -- gold sets -----------------------------------------------------------------------------------
with st.expander("Add a gold set", expanded=not store_cached(gold_sets)):
    st.markdown("The CAI paper's public human-labelled evals become comparisons with a gold label "
                "(which answer is shown as A is randomised with a fixed seed). Human labels from the "
                "Preferences page are a gold set too. Or upload a label file: one JSON object per line, "
                '`{"id": <comparison id>, "label": "A"|"B"|"tie", "rater": "name"}`.')
    if not paper_data_dir().is_dir():
        st.info(f"The paper's eval sets are not at {md_escape(str(paper_data_dir()))}. They are not shipped with the workbench "
                f"(their repository states no license): get them from "
                f"github.com/anthropics/ConstitutionalHarmlessnessPaper and set {PAPER_DATA_ENV} to that folder "
                "before starting the app, or upload a label file below.")
    c1, c2 = st.columns([3, 1])
    paper_file = c1.selectbox("Paper eval set", PAPER_SETS, key="rel_paper_set")
    if c2.button("Import", key="rel_import", width="stretch"):
        try:
            res = import_paper_eval(store, paper_eval_path(paper_file))
            st.success(f"{md_escape(res['source'])}: {len(res['ids'])} comparisons ({res['added']} new)")
        except CaiError as exc:
            show_error(exc)
    upload = st.file_uploader("Label file (JSONL)", type=["jsonl", "json", "txt"], key="rel_upload")
    if upload is not None:
        try:
            st.session_state["rel_uploaded_rows"] = parse_labels(read_upload(upload, ("jsonl", "json", "text")),
                                                                 source=upload.name)
            st.caption(f"{md_escape(upload.name)}: {len(st.session_state['rel_uploaded_rows'])} labels read")
        except (CaiError, UnicodeDecodeError) as exc:
            show_error(exc)

judges = store_cached(judge_keys)
judge_name = {j["judge_key"]: judge_words(store, j["judge_key"], j["model"], j["style"]) for j in judges}
judge_key_help = "Judge keys (style|model|constitution version|principles|settings hash): " + "; ".join(judge_name)
golds = store_cached(gold_sets)
coverage = store_cached(gold_coverage)
gold_names = [g["name"] for g in golds] + ([UPLOADED] if st.session_state.get("rel_uploaded_rows") else [])
tab_dash, tab_spot, tab_dis, tab_run = st.tabs(["Dashboard", "Spot check", "Disagreements", "Run a judge on a gold set"])


def pick_gold(key: str):
    if not gold_names:
        st.info("No gold set yet: import a paper eval set above, label comparisons on the Preferences page, "
                "or upload a label file.")
        return None, []
    # open on the gold set the most judged items cover, not on whichever sorts first (3 human labels
    # headlined "33%, CI 0-100%" while 12 judged paper items sat one click away)
    best = best_covered(coverage, golds)  # from the reads above (gold_coverage is the costly one)
    name = st.selectbox("Gold set", gold_names, key=key, index=gold_names.index(best) if best in gold_names else 0,
                        format_func=lambda n: next((f"{g['name']} ({g['count']} items, "
                                                    f"{max(coverage.get(n, {}).values(), default=0)} judged)"
                                                    for g in golds if g["name"] == n), n))
    rows = st.session_state.get("rel_uploaded_rows", []) if name == UPLOADED else store_cached(load_gold, name)
    return name, rows


# -- dashboard -----------------------------------------------------------------------------------
with tab_dash:
    gold_name, gold_rows = pick_gold("rel_gold")
    if gold_name and not judges:
        st.info("No AI judgments yet: judge comparisons on the Preferences page, or run a judge on a gold set "
                "(last tab).")
    elif gold_name:
        c1, c2 = st.columns([4, 1])
        keys = [j["judge_key"] for j in judges]
        # the judges that judged this gold set, most items first (a judge of other pairs adds nothing here)
        covered = coverage.get(gold_name, {})
        default = sorted((k for k in keys if covered.get(k)), key=lambda k: -covered[k])[:3] or keys[-3:]
        chosen = c1.multiselect("Judges", keys, default=default, key=f"rel_judges_{gold_name}",
                                format_func=lambda k: f"{judge_name[k]} ({covered.get(k, 0)} items of this set)",
                                help="Judge keys: " + "; ".join(keys))
        n_boot = c2.number_input("Bootstrap resamples", 100, 5000, HEADLINE_N_BOOT, step=100, key="rel_nboot",
                                 help="The Demo and the reports use the default, so their intervals match these.")
        if chosen:
            report = cached_report(tuple(chosen), json.dumps(gold_rows), data_version(), int(n_boot))
            st.session_state["rel_report"] = report
            if report["n"] == 0:
                st.warning("These judges have not judged any comparison of this gold set.")
            else:
                metric_cards(report)
                st.subheader("Agreement with gold")
                st.dataframe(agreement_table(report, judge_name), hide_index=True, width="stretch")
                st.caption(f"Ties are a third label: 'accuracy' counts exact matches, 'w/o ties' leaves out items where "
                           f"the judge or the gold says tie. {report['n_invalid']} judgments without a valid verdict "
                           f"were left out. 95% CIs: percentile bootstrap over items ({int(n_boot)} resamples).")
                st.plotly_chart(accuracy_figure(report, judge_name), width="stretch", key="rel_acc_fig")
                left, right = st.columns(2)
                with left:
                    st.subheader("Calibration")
                    st.plotly_chart(calibration_figure({judge_name.get(j["rater"], j["rater"]): j for j in report["judges"]}),
                                    width="stretch", key="rel_cal_fig")
                with right:
                    st.subheader("Confusion matrix")
                    judge_for_cm = st.selectbox("Judge", [j["rater"] for j in report["judges"]], key="rel_cm_judge",
                                                format_func=lambda k: judge_name.get(k, k), help=judge_key_help)
                    cm = next(j["confusion"] for j in report["judges"] if j["rater"] == judge_for_cm)
                    st.plotly_chart(confusion_figure(cm), width="stretch", key="rel_cm_fig")
                if report["by_principle"]:
                    st.subheader("Per principle")
                    st.plotly_chart(group_figure(report["by_principle"], "principle", report["reference"], judge_name),
                                    width="stretch", key="rel_principle_fig")
                if report["by_category"] and len({r["category"] for r in report["by_category"]}) > 1:
                    st.subheader("Per prompt category")
                    st.plotly_chart(group_figure(report["by_category"], "category", report["reference"], judge_name),
                                    width="stretch", key="rel_category_fig")
                if report.get("judge_differences"):
                    st.subheader("Which judge is more accurate?")
                    # the figures first: judge names are long and would push them out of view
                    st.dataframe([{"A minus B": f"{100 * d['diff']:+.1f} points",
                                   "95% CI (paired)": f"{100 * d['ci'][0]:+.1f} to {100 * d['ci'][1]:+.1f}",
                                   "items both judged": d["n"], "accuracy A": pct(d["accuracy_a"]),
                                   "accuracy B": pct(d["accuracy_b"]), "only A right": d["only_a_right"],
                                   "only B right": d["only_b_right"], "judge A": judge_name.get(d["a"], d["a"]),
                                   "judge B": judge_name.get(d["b"], d["b"]), "key A": d["a"], "key B": d["b"]}
                                  for d in report["judge_differences"]], hide_index=True, width="stretch")
                    st.caption("Paired over the items both judges labelled (a bootstrap that resamples items with both "
                               "verdicts together, so item difficulty cancels): a CI that includes 0 means these items "
                               "do not tell the two judges apart.")
                st.subheader("Consistency")
                rows = [{"what": f"self-consistency of {judge_name.get(name, name)} across principles", "items": sc["n"],
                         "mean pairwise agreement": pct(sc["mean_pairwise_agreement"]),
                         "Fleiss' kappa": num(sc["fleiss_kappa"]), "Krippendorff's alpha": num(sc["krippendorff_alpha"]),
                         "95% CI (alpha)": "-"} for name, sc in report["self_consistency"].items()]
                for label, ir in (("among the judges", report["inter_judge"]), ("among gold raters", report["gold_inter_rater"])):
                    if ir:
                        a_ci = ir["krippendorff_alpha_ci"]
                        rows.append({"what": label, "items": ir["n_items"],
                                     "mean pairwise agreement": pct(ir["mean_pairwise_agreement"]),
                                     "Fleiss' kappa": num(ir["fleiss_kappa"]),
                                     "Krippendorff's alpha": num(ir["krippendorff_alpha"]),
                                     "95% CI (alpha)": "-" if a_ci[0] is None else f"{a_ci[0]:.2f} to {a_ci[1]:.2f}"})
                st.dataframe(rows, hide_index=True, width="stretch")
                st.caption("Self-consistency needs a judge that used several principles per pair (principles = all); "
                           "with one random principle per pair it has no items.")


# -- spot check ----------------------------------------------------------------------------------
with tab_spot:
    st.markdown("Draw a stratified random sample of one judge's verdicts (strata: its label x its confidence), "
                "label them **blind** (the judge's answer is hidden), and get the agreement with its CI. "
                "Your labels are saved as human labels (blind) and count as gold afterwards.")
    if not judges:
        st.info("No AI judgments to check yet.")
    else:
        c1, c2, c3, c4 = st.columns([3, 1, 1, 2])
        spot_judge = c1.selectbox("Judge", [j["judge_key"] for j in judges], key="rel_spot_judge",
                                  format_func=judge_name.get, help=judge_key_help)
        n = c2.number_input("N", 1, 500, 20, key="rel_spot_n")
        seed = c3.number_input("Seed", 0, 10_000, 0, key="rel_spot_seed")
        annotator = c4.text_input("Your name", key="rel_spot_annotator")
        if st.button("Draw sample", key="rel_spot_draw"):
            items = collapse(judge_labels(store, spot_judge), ("rater", "id"))
            sample = stratified_sample(items, int(n), seed=int(seed))
            st.session_state["rel_spot"] = {"judge": spot_judge, "items": sample, "answers": {}}
        spot = st.session_state.get("rel_spot")
        if spot:
            items, answers = spot["items"], spot["answers"]
            st.progress(len(answers) / max(1, len(items)), text=f"{len(answers)} of {len(items)} labelled")
            todo = [it for it in items if it["id"] not in answers]
            if todo:
                current = todo[0]
                info = comparison_meta(store, [current["id"]]).get(current["id"])
                if info:
                    show_pair(info["prompt"], info["response_a"], info["response_b"])
                choice = st.radio("Which response is better?", ["A", "B", "tie"], horizontal=True, index=None,
                                  key=f"rel_spot_choice_{current['id']}")
                if st.button("Save and next", key="rel_spot_save", disabled=choice is None):
                    try:
                        add_label(store, int(current["id"]), choice, annotator, blind=True, judge_keys=[spot["judge"]])
                        answers[current["id"]] = choice
                        st.rerun()
                    except CaiError as exc:
                        show_error(exc)
            else:
                gold = [{"id": i, "label": lab, "rater": annotator or "you"} for i, lab in answers.items()]
                result = json_safe(agreement(match(items, gold), n_boot=HEADLINE_N_BOOT))
                spot = reliability_headlines(result)["accuracy"]
                st.success(f"Agreement with your blind labels: {spot.value_text} "
                           f"(95% CI {spot.ci_text}, n={spot.n}); chance is 50%.")
                if spot.warning:
                    st.warning(spot.warning)
                c = st.columns(3)
                c[0].metric("Accuracy w/o ties", pct(result["accuracy_no_ties"]), help=ci_text(result["accuracy_no_ties_ci"]))
                c[1].metric("Cohen's kappa", num(result["cohen_kappa"]))
                c[2].metric("Calibration error", num(result.get("ece")))
                st.plotly_chart(confusion_figure(result["confusion"], "your label vs the judge"), key="rel_spot_cm")


# -- disagreements -------------------------------------------------------------------------------
with tab_dis:
    mode = st.radio("Compare", ["judge vs gold (dashboard selection)", "two judges"], horizontal=True, key="rel_dis_mode")
    rows: list[dict] = []
    if mode.startswith("judge vs gold"):
        report = st.session_state.get("rel_report")
        rows = (report or {}).get("disagreements") or []
        if report is None:
            st.info("Pick a gold set and judges on the Dashboard first.")
    elif len(judges) >= 2:
        keys = [j["judge_key"] for j in judges]
        c1, c2 = st.columns(2)
        first = c1.selectbox("Judge 1", keys, key="rel_dis_j1", format_func=judge_name.get, help=judge_key_help)
        second = c2.selectbox("Judge 2", [k for k in keys if k != first], key="rel_dis_j2", format_func=judge_name.get,
                              help=judge_key_help)
        # the second judge's verdicts play the part of gold labels
        for it in match(judge_labels(store, first), collapse(judge_labels(store, second), ("rater", "id"))):
            if it["label"] != it["gold"]:
                rows.append({**it, "gold_labels": [f"{second}: {it['gold']}"]})
    else:
        st.info("Two judges with judgments are needed.")
    if rows:
        st.caption(f"{len(rows)} disagreements")
        page = st.number_input("Page", 1, max(1, (len(rows) - 1) // PAGE_SIZE + 1), 1, key="rel_dis_page")
        chunk = rows[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
        meta = comparison_meta(store, [r["id"] for r in chunk])
        for r in chunk:
            title = (f"comparison {r['id']} - judge says {r['label']} (P(A) {num(r.get('p_a'), 2)}), "
                     f"{'other' if mode == 'two judges' else 'gold'} says {r['gold']}"
                     + (f" - principle {r['principle']}" if r.get("principle") else ""))
            with st.expander(md_escape(title)):
                info = meta.get(str(r["id"]))
                if info:
                    show_pair(info["prompt"], info["response_a"], info["response_b"])
                st.caption(md_escape(f"judge {judge_name.get(r['rater'], r['rater'])}; P(A) shown first "
                                     f"{num(r.get('p_a_ab'), 2)}, shown second {num(r.get('p_a_ba'), 2)}; labels: "
                                     f"{', '.join(map(str, r.get('gold_labels') or []))}"), help=r["rater"])
                if r.get("reasoning"):
                    st.caption("Judge's reasoning")
                    st.text(r["reasoning"])
    elif mode == "two judges" and len(judges) >= 2:
        st.success("The two judges agree on every pair they both judged.")


# -- run eval-judge in the background ------------------------------------------------------------
with tab_run:
    st.markdown("Run a judge over one of the paper's human-labelled eval sets and get its accuracy with a 95% CI "
                "next to chance (50%). Runs as a background job; results land in the store and on the dashboard.")
    c1, c2, c3, c4 = st.columns([3, 2, 1, 1])
    model = c1.text_input("Judge model", value=active_model(), key="rel_run_model")
    if model.strip().startswith(("http://", "https://")):
        st.caption("An endpoint's numerics are the server's, not the workbench's: vLLM on a CPU serves bfloat16 unless "
                   "started with `--dtype float32`, and moved this judge's P(A) by up to 0.064 against the local "
                   "float32 engine (1e-5 with float32). Start it with `--dtype float32` to compare with a CPU judge.")
    gold_file = c2.selectbox("Gold set", PAPER_SETS, key="rel_run_gold")
    limit = c3.number_input("Limit (0 = all)", 0, 10_000, 50, key="rel_run_limit")
    style = c4.selectbox("Style", list(STYLES), key="rel_run_style")
    truncate = st.checkbox("Cut items too long for the judge model to fit", key="rel_run_truncate",
                           help="An item (conversation and both answers, inside the judge's template) longer than the "
                                "judge model's context is refused before any work; this cuts it to fit instead (the "
                                "conversation loses its middle, each answer its tail) and the result counts the cut "
                                "items (--truncate-prompts). The paper's 438 HHH items need it on a 2,048-token model.")
    stored = {c["name"]: c["version"] for c in list_constitutions(store)}
    constitutions = ["(default)", "builtin"] + list(stored)
    constitution = pick_current(st, "constitution", "Constitution", constitutions, key="rel_run_constitution",
                                help="(default): harmless_helpful if stored, else the built-in principle "
                                     "'Which response is more helpful, honest, and harmless?'")

    def _eval_judge_spec() -> EvalJudgeSpec:
        return EvalJudgeSpec(judge_model=model, gold=str(paper_eval_path(gold_file)), style=style,
                             limit=int(limit) or None, truncate_prompts=truncate,
                             constitution=(f"{constitution}@{stored[constitution]}" if constitution in stored  # pinned
                                           else None if constitution == "(default)" else constitution))

    ej_spec, ej_problem = form_spec(store, _eval_judge_spec)
    if st.button("Start", key="rel_run_start", type="primary"):
        try:
            _, items = load_gold_pairs(paper_eval_path(gold_file), limit=int(limit) or None)
            job_id = start_from_form(store, ej_spec, ej_problem,
                                     title=f"eval-judge {model} on {gold_file}", total=2 * len(items))
            if job_id is not None:
                st.success(f"started job {job_id}")
        except CaiError as exc:
            show_error(exc)

    @st.fragment(run_every=2)
    def eval_jobs() -> None:
        jobs = list_jobs(store, kind="eval-judge", limit=5)
        rerun_when_jobs_end(jobs, "eval_judge_jobs_seen")  # the dashboard and judge pickers see the new judgments
        for job in jobs:
            job_progress(job)
            if job.status == "finished" and job.result and job.result.get("accuracy") is not None:
                key = job.result["judge_key"]
                st.caption(md_escape(f"{judge_name.get(key, key)} on {job.result['gold_set']}: accuracy "
                                     f"{pct(job.result['accuracy'])} (95% CI {ci_text(job.result['accuracy_ci'])}, "
                                     f"n={job.result['n']}) vs chance 50%"
                                     + (" - too few items for a conclusion" if too_few(job.result["n"]) else "")),
                           help=key)
                if job.result.get("truncated"):
                    st.caption(f"{job.result['truncated']} of the items were cut to fit the judge's "
                               f"{job.result.get('context_window') or '?'}-token context (--truncate-prompts)")

    eval_jobs()
