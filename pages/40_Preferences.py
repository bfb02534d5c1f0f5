"""Preferences (RLAIF): sample response pairs, let AI judges pick the better one (both A/B
orders), annotate and override by keyboard, and export the resolved preferences for TRL."""
from __future__ import annotations

import secrets

import streamlit as st

from cai_core.constitution.versions import list_constitutions
from cai_core.errors import CaiError
from cai_core.exports import list_exports
from cai_core.jobs import list_jobs
from cai_core.jobs.specs import ExportPrefsSpec, JudgeJobSpec, PairsSampleSpec
from cai_core.rlaif.judges import STYLES, judgment_rows, list_judges
from cai_core.rlaif.pairs import import_pairs_file, list_batches
from cai_core.rlaif.preferences import (
    ALL_JUDGES,
    ORDERS,
    STATUSES,
    DuplicateLabel,
    add_label,
    ai_verdict,
    export_judges,
    label_history,
    override_label,
    queue,
    stats,
)
from cai_core.data.prompt_sets import list_prompt_sets
from cai_core.settings import get_setting, set_setting
from cai_core.workspace import fresh_name, safe_name
from ui.command_preview import form_spec, preview_button, start_from_form
from ui.common import active_model, get_store, job_progress, pick_current, rerun_when_jobs_end, show_error, store_cached
from ui.pair import show_pair
from ui.reliability import judge_words
from ui.markdown import md_escape
from ui.preferences import CHOICES, fmt_p, jobs_panel, show_export, show_export_judge, show_history, show_verdict
from ui.transcript import show_judgment_transcripts

store = get_store()
model = active_model()

st.title("Preferences")
st.caption("The RL phase of Constitutional AI: an AI judge compares two responses against the constitution "
           "(the paper's multiple-choice format, P(A) from log-probs, both A/B orders), you spot-check and "
           "override it by hand, and the resolved preferences become a reward-model / DPO dataset.")

ALL = "(all)"
batches = store_cached(list_batches)
batch_names = list(dict.fromkeys(b["batch"] for b in batches if b["batch"]))  # newest first: what was just sampled

s = store_cached(stats)
m = st.columns(5)
m[0].metric("Comparisons", s["comparisons"])
m[1].metric("Judged", s["judged"])
m[2].metric("Human labelled", s["human_labelled"])
m[3].metric("Overrides", s["overrides"])
m[4].metric("Invalid judgments", s["invalid_judgments"],
            help="Judge outputs that could not be parsed (parse style). They are counted, never guessed; "
                 "pick status 'invalid' in the queue to see them.")

tab_annotate, tab_make, tab_export = st.tabs(["Annotate", "Sample and judge", "Export"])

# -- annotate ----------------------------------------------------------------------------------
with tab_annotate:
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    if "annotator" not in st.session_state:
        st.session_state["annotator"] = get_setting(store, "annotator", "") or ""
    annotator = c1.text_input("Annotator", key="annotator", help="Your name, stored with every label.")
    blind = c2.toggle("Blind mode", value=True, key="blind",
                      help="Hide the AI verdict until you have answered (no anchoring on the judge).")
    order = c3.selectbox("Queue order", ORDERS, key="queue_order",
                         format_func=lambda o: {"uncertain": "most uncertain first", "flips": "judge flips first",
                                                "disagreement": "ensemble disagreements first", "random": "random",
                                                "newest": "newest", "oldest": "oldest"}[o])
    status = c4.selectbox("Show", STATUSES, key="queue_status")
    c5, c6 = st.columns(2)
    q_batch = c5.selectbox("Batch", [ALL] + batch_names, key="queue_batch")
    judges = store_cached(list_judges)
    judge_name = {j["judge_key"]: judge_words(store, j["judge_key"], j["model"], j["style"]) for j in judges}
    judge_key_help = "Judge keys: " + "; ".join(judge_name)
    judge_keys = c6.multiselect("Judges (AI verdict)", [j["judge_key"] for j in judges], key="queue_judges",
                                format_func=lambda k: judge_name.get(k, k),
                                help="Empty: every judge's judgments, averaged. " + judge_key_help)
    batch_filter = None if q_batch == ALL else q_batch
    offset = st.session_state.setdefault("queue_offset", 0)

    page = store_cached(queue, order=order, status=status, batch=batch_filter, judge_keys=judge_keys or None,
                 limit=1, offset=offset, seed=int(get_setting(store, "queue_seed", 0) or 0))
    last = st.session_state.get("last_answer")
    if last:
        # blind mode reveals the AI verdict of the item just answered
        ai = "no AI verdict" if last["ai_label"] is None else f"AI said {last['ai_label']} (P(A)={fmt_p(last['ai_p_a'])})"
        note = " - recorded as an override" if last["is_override"] else ""
        st.success(f"Comparison {last['comparison_id']}: you said {last['label']}; {ai}{note}.")
    if st.session_state.get("annotate_error"):
        st.error(md_escape(st.session_state.pop("annotate_error")))
    if st.session_state.get("annotate_repeat"):
        st.caption(f"A repeated key press for comparison {st.session_state.pop('annotate_repeat')} was ignored "
                   "(one answer per item shown).")

    if not page["rows"]:
        st.info("The queue is empty for this filter." if s["comparisons"] else
                "No comparisons yet: sample or import pairs in the 'Sample and judge' tab.")
        if offset:
            st.session_state["queue_offset"] = 0
    else:
        row = page["rows"][0]
        cid = row["id"]
        st.text(f"Item {offset + 1} of {page['total']} - comparison {cid} - batch {row['batch'] or '-'} - "
                f"source {row['source']}")

        # One client id per shown item: it is part of the choice buttons' keys and of the label, so a
        # burst of key presses (or a press that reaches the server while it reruns) stores one label for
        # the item the annotator saw, never a second one and never one for the item loading next.
        shown = st.session_state.get("annotate_shown")
        if not shown or shown[0] != cid:
            shown = st.session_state["annotate_shown"] = (cid, secrets.token_hex(8))
        nonce = shown[1]

        def annotate(label: str, comparison_id: int, client_id: str, at_offset: int) -> None:
            try:
                name = st.session_state.get("annotator", "")
                result = add_label(store, comparison_id, label, name, reason=st.session_state.get("reason"),
                                   blind=bool(st.session_state.get("blind")), judge_keys=judge_keys or None,
                                   client_id=client_id)
                set_setting(store, "annotator", result["annotator"])
                st.session_state["last_answer"] = result
                st.session_state["reason"] = ""
                st.session_state["annotate_shown"] = None  # a deliberate new answer to this item gets a new id
                if status != "unlabelled":  # the labelled item stays in these views: step forward
                    st.session_state["queue_offset"] = at_offset + 1
            except DuplicateLabel:
                st.session_state["annotate_repeat"] = comparison_id
            except CaiError as exc:
                st.session_state["annotate_error"] = str(exc)

        show_pair(row["prompt"], row["response_a"], row["response_b"],
                  question=(row.get("meta") or {}).get("question"))
        st.text_input("Reason (optional; kept with the label, shown for overrides)", key="reason")
        cols = st.columns(len(CHOICES) + 2)
        for col, (label, text, key) in zip(cols, CHOICES):
            col.button(text, key=f"label_{label}_{nonce}", shortcut=key, on_click=annotate,
                       args=(label, cid, nonce, offset), disabled=not annotator.strip(), width="stretch")
        # Streamlit shows each shortcut as a badge next to the label, so labels do not repeat the key
        # (a "[Left]" in the label too was cut off)
        if cols[-2].button("Previous", key="queue_prev", shortcut="Left", disabled=offset == 0,
                           width="stretch"):
            st.session_state["queue_offset"] = max(0, offset - 1)
            st.rerun()
        if cols[-1].button("Next", key="queue_next", shortcut="Right",
                           disabled=offset + 1 >= page["total"], width="stretch"):
            st.session_state["queue_offset"] = offset + 1
            st.rerun()
        if not annotator.strip():
            st.warning("Enter your annotator name to label.")
        st.caption("Keyboard: A = A is better, B = B is better, T = tie, S = skip, X = both bad, "
                   "Left/Right = previous/next item. The next item loads at once. "
                   "(C and R are reserved by Streamlit, hence X for 'both bad'.)")

        history = label_history(store, cid)
        answered = any(h["annotator"] == annotator.strip() for h in history)
        st.markdown("**AI verdict**")
        if blind and not answered:
            st.info("Hidden in blind mode until you answer (other people's labels too).")
        else:
            verdict = ai_verdict(store, cid, judge_keys or None)
            show_verdict(verdict, row.get("gold_label"))
            show_judgment_transcripts([r for r in judgment_rows(store, cid)
                                       if not judge_keys or r["judge_key"] in judge_keys])
            if verdict is not None and verdict.label is not None:
                with st.expander("Override the AI verdict"):
                    others = [c for c in ("A", "B", "tie", "both_bad") if c != verdict.label]
                    o_label = st.radio("Label instead", others, horizontal=True, key=f"override_label_{cid}")
                    o_reason = st.text_input("Reason (required)", key=f"override_reason_{cid}")
                    if st.button("Record override", key=f"override_{cid}"):
                        try:
                            r = override_label(store, cid, o_label, annotator, o_reason, judge_keys=judge_keys or None)
                            st.session_state["last_answer"] = r
                            st.rerun()
                        except CaiError as exc:
                            show_error(exc)
        if not blind or answered:
            st.markdown("**Label history** (append-only)")
            show_history(history)

# -- sample, import, judge ---------------------------------------------------------------------
with tab_make:
    st.subheader("Sample pairs")
    st.caption("k responses per prompt from a policy (the base model or an SFT run's output folder); every two "
               "distinct responses form a pair. Runs in the background.")
    sets = list_prompt_sets(store)
    with st.form("sample_form", enter_to_submit=False):
        c1, c2 = st.columns(2)
        policy = c1.text_input("Policy model", value=model, help="default, a model folder (e.g. workspace/runs/NAME/...), a .gguf, or a URL")
        prompt_src = pick_current(c2, "prompt_set", "Prompt set",
                                  [p["name"] for p in sets] or ["(no prompt sets - import one first)"],
                                  key="sample_prompt_set", in_form=True)
        prompt_file = st.text_input("...or a prompts file path (.jsonl/.csv/.txt)", value="")
        c3, c4, c5, c6, c7 = st.columns(5)
        k = c3.number_input("k", 2, 8, 2)
        temperature = c4.number_input("Temperature", 0.05, 2.0, 0.8, step=0.05)
        max_new = c5.number_input("Max new tokens", 8, 1024, 128)
        seed = c6.number_input("Seed", 0, 10**6, 0)
        limit = c7.number_input("Prompts (max)", 1, 100000, 10)
        batch_name = st.text_input("Batch name", value=fresh_name("pairs", batch_names),
                                   help="A new name starts a new batch; an existing one adds to (resumes) it.")
        sample_truncate = st.checkbox("Cut prompts too long for the model to fit", key="sample_truncate",
                                      help="A prompt longer than the model's context (with the answer's max new tokens) is refused before any work; this keeps its beginning instead (--truncate-prompts).")
        preview_button("sample_preview")
        sample_go = st.form_submit_button("Start sampling")

    def _sample_spec() -> PairsSampleSpec:
        safe_name(batch_name, "batch name")
        source = prompt_file.strip() or (prompt_src if sets else "")
        if not source:
            raise CaiError("choose a prompt set or give a prompts file")
        return PairsSampleSpec(model=policy, prompts=source, k=int(k), batch=batch_name, temperature=float(temperature),
                               max_new_tokens=int(max_new), seed=int(seed), limit=int(limit),
                               truncate_prompts=sample_truncate)

    sample_spec, sample_problem = form_spec(store, _sample_spec)
    if sample_go:
        job = start_from_form(store, sample_spec, sample_problem, title=f"sample {batch_name}", total=int(limit))
        if job is not None:
            st.success(f"Started sampling job {job}.")

    with st.expander("Import pairs from a file"):
        st.caption('JSONL rows {"id","prompt","response_a","response_b"} or {"prompt","chosen","rejected"} '
                   "(strings or conversational lists), or the paper's 438HHHEvaluations.jsonl / HarmfulVsEthical.jsonl "
                   "(kept as gold-labelled comparisons).")
        with st.form("import_form"):
            path = st.text_input("File path")
            imp_batch = st.text_input("Batch name (default: the file name)")
            if st.form_submit_button("Import"):
                try:
                    if imp_batch.strip():
                        safe_name(imp_batch.strip(), "batch name")
                    res = import_pairs_file(store, path.strip(), batch=imp_batch.strip() or None)
                    st.success(f"{res['pairs']} pairs read, {res['added']} new, {res['with_gold']} with a gold label "
                               f"(batch {md_escape(res['batch'])}, source {md_escape(res['source'])}).")
                except CaiError as exc:
                    show_error(exc)

    st.subheader("Judge")
    consts = list_constitutions(store)
    with st.form("judge_form", enter_to_submit=False):
        c1, c2, c3 = st.columns(3)
        # keyed by the batch name, so a batch created meanwhile (an evaluation in the background sorts
        # first) never changes the pick
        j_batch = c1.selectbox("Batch", batch_names or ["(no batches yet)"], key="judge_batch")
        j_model = c2.text_input("Judge model", value=model)
        j_const = pick_current(c3, "constitution", "Constitution",
                               [c["name"] for c in consts] or ["(none - create one first)"], key="judge_constitution",
                               in_form=True)
        c4, c5, c6, c7 = st.columns(4)
        style = c4.selectbox("Style", list(STYLES), key="judge_style", format_func=lambda x: {
            "mc": "multiple choice (log-probs)", "cot": "chain of thought (clamped)", "parse": "parsed verdict (no log-probs)"}[x])
        principles = c5.selectbox("Principles", ["random", "all"], key="judge_principles", help="random: one per pair, seeded (the paper); all: an ensemble")
        swap = c6.toggle("Both orders (A/B swap)", value=True)
        combine = c7.selectbox("Combine", ["mean", "vote"], key="judge_combine")
        c8, c9, c10, c11 = st.columns(4)
        ensemble = c8.text_input("More judge models (comma-separated)", value="")
        clamp = c9.slider("CoT clamp", 0.0, 1.0, (0.4, 0.6))
        j_max_new = c10.number_input("Max new tokens (cot, parse)", 8, 2048, 160, key="judge_max_new",
                                     help="Length of the reasoning (chain of thought) or of the generated verdict; "
                                          "multiple choice generates nothing")
        j_seed = c11.number_input("Seed", 0, 10**6, 0, key="judge_seed")
        preview_button("judge_preview")
        judge_go = st.form_submit_button("Start judging", key="judge_start")

    def _judge_spec() -> JudgeJobSpec:
        if not batch_names:
            raise CaiError("no comparisons yet: sample or import pairs first")
        if not consts:
            raise CaiError("no constitution yet: create one on the Constitution page")
        if j_batch not in batch_names:
            raise CaiError(f"batch {j_batch!r} is gone; pick another")
        newest = {c["name"]: c["version"] for c in consts}  # pinned: the job judges with this exact version
        return JudgeJobSpec(judge_model=j_model, constitution=f"{j_const}@{newest[j_const]}", batch=j_batch, style=style, principles=principles,
                            combine=combine, cot_clamp=f"{clamp[0]},{clamp[1]}", max_new_tokens=int(j_max_new),
                            seed=int(j_seed), no_swap=not swap, ensemble_models=ensemble.strip())

    judge_spec, judge_problem = form_spec(store, _judge_spec)
    if judge_go:
        job = start_from_form(store, judge_spec, judge_problem, title=f"judge {j_batch} ({style})")
        if job is not None:
            st.success(f"Started judging job {job}.")

    @st.fragment(run_every=2)
    def jobs_fragment() -> None:
        st.markdown("**Jobs**")
        jobs = jobs_panel(store)
        rerun_when_jobs_end(jobs, "pref_jobs_seen")  # counts, queue and batch pickers see the new pairs/judgments

    jobs_fragment()

# -- export ------------------------------------------------------------------------------------
with tab_export:
    st.caption("Resolved label = newest human label (not skip), else the gold label, else the AI verdict. "
               "Ties, 'both bad' and invalid items are left out and counted in the card. Output: "
               "workspace/exports/NAME/ with data.jsonl, an HF dataset folder (hf/), lineage.jsonl and a card.")
    st.info("Only the **train** split is exported: gold sets (imported for judge reliability) and the comparisons "
            "of evaluations and A/B experiments are held out unless you include their split below. AI verdicts "
            "that flip with the A/B order or sit on the tie margin are left out unless you keep them; the card "
            "counts rows by origin and split, and everything left out and why.")
    with st.form("export_form"):
        c1, c2, c3 = st.columns(3)
        e_name = c1.text_input("Export name", value="prefs-1")
        e_batch = c2.selectbox("Batch", [ALL] + batch_names, key="export_batch")
        e_combine = c3.selectbox("Combine AI judges", ["mean", "vote"], key="export_combine")
        e_judges = st.multiselect("Judges for AI labels (empty: the newest complete judge)",
                                  [ALL_JUDGES] + [j["judge_key"] for j in judges], key="export_judges",
                                  format_func=lambda k: "all judges, combined" if k == ALL_JUDGES else judge_name.get(k, k),
                                  help="Empty: ONE judge, the newest complete one (never a judge whose job stopped, "
                                       "failed or still runs, nor one that judged only part of its batches); pick "
                                       "judges to use them, partial ones included. " + judge_key_help)
        c4, c5, c6 = st.columns(3)
        soft = c4.toggle("Soft-label column (p_chosen)")
        margin = c5.toggle("Margin column (RewardTrainer)")
        overwrite = c6.toggle("Overwrite an existing export")
        c7, c8, c9 = st.columns(3)
        e_splits = c7.multiselect("Also include held-out splits", ["eval", "gold"], key="export_splits",
                                  help="Default: the train split only (--include-split).")
        keep_flipped = c8.toggle("Keep AI verdicts that flip with the order", key="export_keep_flipped",
                                 help="Kept by their mean P(A) (--keep-flipped).")
        min_conf = c9.number_input("Minimum AI confidence max(P, 1-P)", 0.5, 1.0, 0.5, 0.05, key="export_min_conf",
                                   help="0.5 = no minimum (--min-confidence).")
        preview_button("export_preview")
        export_go = st.form_submit_button("Export")

    def _export_spec() -> ExportPrefsSpec:
        safe_name(e_name, "export name")
        return ExportPrefsSpec(name=e_name, combine=e_combine, batch=None if e_batch == ALL else e_batch,
                               judges=",".join(e_judges) or None, soft_labels=soft, margin=margin, overwrite=overwrite,
                               include_split=",".join(e_splits) or None, keep_flipped=keep_flipped,
                               min_confidence=float(min_conf) if min_conf > 0.5 else None)

    export_spec, export_problem = form_spec(store, _export_spec)
    if not e_judges:  # which judge an export with no pick takes its AI labels from, and which it passes over
        show_export_judge(store_cached(export_judges, batch=None if e_batch == ALL else e_batch,
                                       include_splits=",".join(e_splits) or None), judge_name)
    if export_go:
        job = start_from_form(store, export_spec, export_problem, title=f"export {e_name}")
        if job is not None:
            st.success(f"Started export job {job}; it appears below when done.")

    @st.fragment(run_every=2)
    def exports_fragment() -> None:
        """Export jobs in flight (progress or failure) and the finished exports, without a page reload."""
        for job in list_jobs(store, kind="export-prefs", limit=3):
            if job.status != "finished":
                job_progress(job)
        for exp in list_exports(store, "preference"):
            show_export(exp)

    exports_fragment()

