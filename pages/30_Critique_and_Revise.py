"""Critique and Revise: watch one prompt live, run a prompt set in the background, browse the
results, see what each principle does, and export the revisions as SFT data."""
from __future__ import annotations

import time
from contextlib import closing

import pandas as pd
import plotly.express as px
import streamlit as st

from cai_core.constitution.versions import get_by_version, get_constitution, list_constitutions, list_versions
from cai_core.errors import CaiError
from cai_core.jobs import TERMINAL, job_spec, list_jobs, stop_job
from cai_core.jobs.specs import ExportSftSpec, ReviseSpec
from cai_core.models.specs import get_backend
from cai_core.data.prompt_sets import get_prompts, list_prompt_sets
from cai_core.supervised.revision import (
    CHANGE_FILTERS,
    SCHEDULES,
    ReviseSettings,
    default_batch_name,
    get_trajectory,
    list_batches,
    list_trajectories,
    principle_stats,
    stream_revision,
)
from cai_core.exports import list_exports
from cai_core.workspace import safe_name
from ui.common import (active_model, age, api_key, get_store, job_progress, pick_current, rerun_when_jobs_end,
                       show_error, store_cached)
from ui.command_preview import form_spec, preview_button, resume_page_job, start_from_form
from ui.markdown import md_code, md_escape
from ui.revise import LiveView, render_trajectory

PAGE_SIZE = 25
store = get_store()
model = active_model()

st.title("Critique and Revise")
st.caption("The supervised phase of Constitutional AI: the model answers, critiques its answer against a "
           "principle, and revises it - round after round. The final revisions become SFT data.")

constitutions = list_constitutions(store)
if not constitutions:
    st.info("No constitution yet: create or import one on the Constitution page first.")
    st.stop()


def pick_constitution(key: str):
    """Constitution name + version pickers; returns the Constitution."""
    names = [c["name"] for c in constitutions]
    c1, c2 = st.columns([2, 1])
    name = pick_current(c1, "constitution", "Constitution", names, key=f"{key}_const")
    versions = list_versions(store, name)
    # a saved time, not "12s ago": a label that changes between reruns no longer matches the chosen option
    version = c2.selectbox("Version", [v["version"] for v in versions], key=f"{key}_ver",
                           format_func=lambda v: next((f"{v} ({time.strftime('%Y-%m-%d %H:%M', time.localtime(x['created_at']))})"
                                                       for x in versions if x["version"] == v), v),
                           help="Every saved edit is a version (content hash); the newest is first.")
    return get_constitution(store, name, version)


def settings_form(key: str, constitution, default_rounds: int = 2) -> ReviseSettings:
    c1, c2, c3, c4 = st.columns(4)
    rounds = c1.number_input("Rounds", 1, 10, default_rounds, key=f"{key}_rounds")
    schedule = c2.selectbox("Principle schedule", SCHEDULES, key=f"{key}_schedule",
                            help="random: a fresh principle drawn each round (paper default, seeded); "
                                 "sequence: the principles you list, in order; all: every enabled principle in turn")
    cot = c3.toggle("Chain-of-thought critique", key=f"{key}_cot",
                    help="The model checks step by step, then gives a verdict; the reasoning is shown apart.")
    early = c4.toggle("Stop early", key=f"{key}_early", help="Stop when a critique finds no violation.")
    sequence: list[str] = []
    if schedule == "sequence":
        sequence = st.multiselect("Principles, in order", [p.id for p in constitution.enabled_principles()],
                                  key=f"{key}_sequence")
    with st.expander("Generation settings"):
        g1, g2, g3, g4 = st.columns(4)
        max_new = g1.number_input("Max new tokens", 8, 4096, 200, key=f"{key}_max")
        temperature = g2.number_input("Temperature", 0.0, 2.0, 0.7, 0.1, key=f"{key}_temp", help="0 = greedy")
        seed = g3.number_input("Seed", 0, 2**31 - 1, 0, key=f"{key}_seed",
                               help="Same prompt, constitution, model, settings and seed = the stored result is reused.")
        few_shot = g4.toggle("Few-shot examples", True, key=f"{key}_fewshot",
                             help=f"{len(constitution.few_shot)} example(s) in this constitution, shown before the task")
    return ReviseSettings(rounds=int(rounds), schedule=schedule, sequence=sequence, cot=cot, early_stop=early,
                          few_shot=few_shot, seed=int(seed), max_new_tokens=int(max_new), temperature=float(temperature))


live, batch_tab, results_tab, stats_tab, sft_tab = st.tabs(
    ["Single prompt (live)", "Batch", "Results", "Principle statistics", "SFT data"])

# -- single prompt, live ---------------------------------------------------------------------------
with live:
    constitution = pick_constitution("live")
    sets = list_prompt_sets(store)
    source = st.radio("Prompt", ["Type a prompt", "From a prompt set"], horizontal=True, key="live_source")
    prompt = ""
    if source == "From a prompt set" and sets:
        set_name = pick_current(st, "prompt_set", "Prompt set", [s["name"] for s in sets], key="live_set")
        by_id = {p["id"]: p for p in get_prompts(store, set_name)[:500]}
        # keyed by the set and the prompt's id: switching the set never leaves the old set's prompt picked
        pid = st.selectbox("Prompt from the set", list(by_id), key=f"live_prompt_{set_name}",
                           format_func=lambda i: by_id[i]["text"][:120].replace("\n", " "))
        prompt = by_id[pid]["text"] if by_id else ""
        st.text(prompt)
    elif source == "From a prompt set":
        st.info("No prompt sets yet: import one on the Constitution page, or type a prompt.")
    else:
        prompt = st.text_area("Prompt", key="live_prompt", height=80,
                              placeholder="e.g. How can I get back at a coworker who embarrassed me?")
    settings = settings_form("live", constitution)
    st.caption(f"Model: {md_code(model)} (change it in the sidebar)")
    names = {p.id: p.name for p in constitution.principles}
    # Stop reruns the page: the running loop below ends at its next token (the generator is closed, the
    # model stops), the finished steps stay stored and the unfinished one is discarded. Its callback runs
    # first in that rerun and leaves the mark read here.
    stopped = bool(st.session_state.pop("live_stopped", False))
    b_run, b_stop = st.columns([1, 1], width=320)
    run = b_run.button("Run live", type="primary", key="live_run", width="stretch")
    b_stop.button("Stop", key="live_stop", disabled=not run, width="stretch",
                  on_click=st.session_state.__setitem__, args=("live_stopped", True),
                  help="Ends the generation at the next token; finished steps stay stored.")
    if run:
        try:
            if not prompt.strip():
                raise CaiError("type or pick a prompt first")
            settings.validate(constitution)
            with st.spinner(f"loading {md_escape(model)}..."):
                backend = get_backend(model, store.workspace, api_key=api_key())
            view = LiveView(settings.rounds, names, settings.max_new_tokens)
            last = None
            with closing(stream_revision(store, backend, constitution, prompt.strip(), settings, model)) as events:
                for event in events:
                    if event.kind == "start":
                        st.session_state["live_trajectory"] = event.data["trajectory_id"]
                        if event.data.get("stored"):
                            st.caption("Stored result (same prompt, constitution version, model, settings and seed); "
                                       "change the seed for a fresh sample.")
                    view.handle(event)
                    st.session_state["live_stage"] = view.progress.stage
                    last = event
            if last is not None and last.kind == "done":
                st.session_state["live_trajectory"] = last.data["id"]
        except CaiError as exc:
            show_error(exc)
    if (not run and stopped and st.session_state.get("live_trajectory")
            and get_trajectory(store, st.session_state["live_trajectory"])["status"] != "done"):
        st.warning(f"Stopped during the {md_escape(st.session_state.get('live_stage') or 'run')}: the steps "
                   "finished before it are stored, the unfinished one was discarded. Run it again (same seed) "
                   "to resume from there.")
    if not run and st.session_state.get("live_trajectory"):
        try:
            render_trajectory(get_trajectory(store, st.session_state["live_trajectory"]), names)
        except CaiError:
            st.session_state.pop("live_trajectory", None)

# -- batch -----------------------------------------------------------------------------------------
with batch_tab:
    sets = list_prompt_sets(store)
    if not sets:
        st.info("No prompt sets yet: import one on the Constitution page (or `python -m cai_core` prompt import).")
    else:
        set_name = pick_current(st, "prompt_set", "Prompt set", [s["name"] for s in sets], key="batch_set",
                                format_func=lambda n: next(f"{n} ({s['prompts']} prompts, {s['kind']})"
                                                           for s in sets if s["name"] == n))
        n_prompts = next(s["prompts"] for s in sets if s["name"] == set_name)
        b_const = pick_constitution("batch")
        b_settings = settings_form("batch", b_const)
        c1, c2, c3 = st.columns(3)
        limit = c1.number_input("Prompts (first N)", 1, max(1, n_prompts), max(1, n_prompts), key="batch_limit")
        batch_size = c2.number_input("Batch size", 0, 1024, 0, key="batch_size",
                                     help="Work in flight: 0 keeps as much outstanding as the model serves (an "
                                          "endpoint's concurrency; 8 prompts per batched call on the CPU); a "
                                          "number overrides it (--batch-size)")
        default_name = default_batch_name(set_name, b_const.version)
        # The suggested name follows the chosen set and version until the user types their own.
        if st.session_state.get("batch_name") in (None, st.session_state.get("batch_name_default")):
            st.session_state["batch_name"] = default_name
        st.session_state["batch_name_default"] = default_name
        batch_name = c3.text_input("Batch name", key="batch_name",
                                   help="Starting the same batch again resumes it; nothing is generated twice.")
        batch_truncate = st.checkbox("Cut prompts too long for the model to fit", key="batch_truncate",
                                     help="A prompt longer than the model's context (with the answer's max new tokens) is refused before any work; this keeps its beginning instead (--truncate-prompts).")
        st.caption(f"Model: {md_code(model)} (the sidebar's active model)")

        def _batch_spec() -> ReviseSpec:
            b_settings.validate(b_const)
            safe_name(batch_name, "batch name")
            return ReviseSpec(
                model=model, constitution=f"{b_const.name}@{b_const.version}", prompts=set_name,
                rounds=b_settings.rounds, schedule=b_settings.schedule, sequence=",".join(b_settings.sequence),
                seed=b_settings.seed, max_new_tokens=b_settings.max_new_tokens, temperature=b_settings.temperature,
                batch_size=int(batch_size) or None, limit=int(limit), batch=batch_name, cot=b_settings.cot,
                early_stop=b_settings.early_stop, no_few_shot=not b_settings.few_shot, truncate_prompts=batch_truncate)

        batch_spec, batch_problem = form_spec(store, _batch_spec)
        if st.button("Start batch in the background", type="primary", key="batch_start"):
            job_id = start_from_form(store, batch_spec, batch_problem, title=f"revise {batch_name}", total=int(limit))
            if job_id is not None:
                st.session_state["batch_job"] = job_id
                st.success(f"Started job {job_id}. It keeps running if you close the browser.")

    @st.fragment(run_every=2)
    def batch_jobs() -> None:
        jobs = list_jobs(store, kind="revise", limit=5)
        rerun_when_jobs_end(jobs, "revise_jobs_seen")  # the Results / statistics / SFT tabs see the new batch
        if not jobs:
            return
        st.markdown("**Recent batches**")
        newest = {}  # batch name -> newest job id: only that one offers Resume (two runs of one batch would race)
        for job in jobs:
            newest.setdefault(_batch_of(job), job.id)
        for job in jobs:
            with st.container(border=True):
                job_progress(job)
                if job.status not in TERMINAL:
                    if st.button("Stop", key=f"stop_{job.id}"):
                        stop_job(store, job.id)
                elif job.status in ("failed", "stopped") and newest.get(_batch_of(job)) != job.id:
                    st.caption("Resumed by a later job.")
                elif job.status in ("failed", "stopped"):
                    st.caption("Starting it again resumes where it stopped.")
                    if st.button("Resume", key=f"resume_{job.id}"):
                        st.session_state["batch_job"] = resume_page_job(store, job.id)
                elif job.result:
                    st.caption(f"{job.result.get('done')}/{job.result.get('trajectories')} prompts done · "
                               f"batch {md_escape(str(job.result.get('batch')))}")

    def _batch_of(job) -> str | None:
        try:
            return job_spec(job).batch
        except CaiError:
            return None

    batch_jobs()

# -- results ---------------------------------------------------------------------------------------
with results_tab:
    batches = store_cached(list_batches)
    f1, f2, f3, f4 = st.columns([2, 2, 2, 3])
    batch_filter = f1.selectbox("Batch", ["(all)"] + [b["batch"] for b in batches], key="res_batch")
    principle_ids = sorted({s["principle_id"] for s in store_cached(
        principle_stats, batch=None if batch_filter == "(all)" else batch_filter)})
    principle_filter = f2.selectbox("Principle", ["(any)"] + principle_ids, key="res_principle")
    change = f3.selectbox("Changed", list(CHANGE_FILTERS), key="res_change",
                          help="How much the final answer differs from the first (by words)")
    search = f4.text_input("Search prompt and answers", key="res_search")
    filters = dict(batch=None if batch_filter == "(all)" else batch_filter,
                   principle=None if principle_filter == "(any)" else principle_filter,
                   change=None if change == "any" else change, search=search or None)
    _, total = store_cached(list_trajectories, limit=1, **filters)
    pages = max(1, -(-total // PAGE_SIZE))
    page = st.number_input(f"Page (of {pages}; {total} trajectories)", 1, pages, 1, key="res_page")
    rows, total = store_cached(list_trajectories, limit=PAGE_SIZE, offset=(int(page) - 1) * PAGE_SIZE, **filters)
    if not rows:
        st.info("No finished trajectories match. Run a batch or a live prompt first.")
    else:
        table = pd.DataFrame([{
            "id": r["id"], "batch": r["batch"], "prompt": r["prompt"][:100], "principles": r["principles"],
            # text, so a trajectory without a final answer shows "-" rather than None
            "changed %": "-" if r["change_ratio"] is None else f"{round(100 * r['change_ratio'])}%",
            "final": (r["final"] or "")[:100], "version": r["constitution_version"], "created": age(r["created_at"]),
        } for r in rows])
        st.dataframe(table, hide_index=True, width="stretch")
        chosen = st.selectbox("Open trajectory", [r["id"] for r in rows], key="res_open",
                              format_func=lambda i: f"#{i}: " + next(r["prompt"][:90] for r in rows if r["id"] == i))
        traj = get_trajectory(store, chosen)
        try:
            names = {p.id: p.name for p in get_by_version(store, traj["constitution_version"]).principles}
        except CaiError:
            names = {}
        render_trajectory(traj, names)

# -- per-principle statistics ----------------------------------------------------------------------
with stats_tab:
    st.caption("Which wording does what: how often a principle's critique finds a violation, how much its "
               "revisions change the text, and how many refusals they introduce.")
    batches = store_cached(list_batches)
    s_batch = st.selectbox("Batch", ["(all)"] + [b["batch"] for b in batches], key="stats_batch")
    stats = store_cached(principle_stats, batch=None if s_batch == "(all)" else s_batch)
    if not stats:
        st.info("No critique rounds stored yet.")
    else:
        df = pd.DataFrame(stats)
        st.dataframe(df[["principle_id", "rounds", "violations", "clean", "unclear", "violation_rate",
                         "revisions", "mean_edit_words", "refusals_introduced", "refusal_rate"]],
                     hide_index=True, width="stretch")
        c1, c2, c3 = st.columns(3)
        c1.plotly_chart(px.bar(df, x="principle_id", y="violation_rate", title="Violation found (share)"),
                        width="stretch")
        c2.plotly_chart(px.bar(df, x="principle_id", y="mean_edit_words", title="Mean words changed per revision"),
                        width="stretch")
        c3.plotly_chart(px.bar(df, x="principle_id", y="refusals_introduced", title="Refusals introduced"),
                        width="stretch")

# -- SFT export ------------------------------------------------------------------------------------
with sft_tab:
    st.caption("Export (prompt, final revision) pairs as a TRL conversational dataset: data.jsonl and a "
               "datasets folder (load_from_disk), with a card listing constitution version, model and counts.")
    batches = store_cached(list_batches)
    # a suggested free name, so the form never opens on "invalid export name ''" (issue 22 item 13); it is
    # refreshed once an export took it, and a name the user typed is kept
    taken = {e["name"] for e in list_exports(store, "sft")}
    suggested = next(f"sl-cai-v{k}" for k in range(1, len(taken) + 2) if f"sl-cai-v{k}" not in taken)
    if st.session_state.get("sft_name") in (None, st.session_state.get("sft_name_suggested")):
        st.session_state["sft_name"] = st.session_state["sft_name_suggested"] = suggested
    with st.form("sft_form"):
        name = st.text_input("Export name", key="sft_name", placeholder="sl-cai-v1")
        scope = st.radio("Which trajectories", ["All finished", "One batch", "One constitution version"],
                         horizontal=True, key="sft_scope")
        e_batch = st.selectbox("Batch", [b["batch"] for b in batches] or ["(none)"], key="sft_batch")
        versions = sorted({v for b in batches for v in (b["versions"] or "").split(",") if v})
        e_version = st.selectbox("Constitution version", versions or ["(none)"], key="sft_version")
        helpful_sets = [s["name"] for s in list_prompt_sets(store)]
        mix = st.selectbox("Mix in the model's own answers to a helpfulness prompt set", ["(none)"] + helpful_sets,
                           key="sft_mix", help="The paper mixes helpful data so SL-CAI stays helpful; missing "
                                               "answers are generated with the trajectories' model.")
        formats = st.multiselect("Formats", ["jsonl", "hf"], default=["jsonl", "hf"], key="sft_formats")
        sft_splits = st.multiselect("Also include held-out splits", ["eval", "gold"], key="sft_splits",
                                    help="Only the train split is exported by default: an A/B experiment's "
                                         "trajectories are held out (--include-split).")
        overwrite = st.checkbox("Overwrite an export of the same name", key="sft_overwrite")
        preview_button("sft_preview")
        submitted = st.form_submit_button("Export", type="primary")

    def _sft_spec() -> ExportSftSpec:
        if not name.strip():
            raise CaiError("give the export a name")
        safe_name(name, "export name")
        if not formats:
            raise CaiError("choose at least one format")
        batch_pick = version_pick = None
        if scope == "One batch":
            if e_batch == "(none)":
                raise CaiError("no batch to export yet")
            batch_pick = e_batch
        elif scope == "One constitution version":
            if e_version == "(none)":
                raise CaiError("no constitution version with trajectories yet")
            version_pick = e_version
        return ExportSftSpec(name=name, format=",".join(formats), batch=batch_pick, constitution_version=version_pick,
                             mix_helpful=None if mix == "(none)" else mix, overwrite=overwrite,
                             include_split=",".join(sft_splits) or None)

    sft_spec, sft_problem = form_spec(store, _sft_spec)
    if submitted:
        job_id = start_from_form(store, sft_spec, sft_problem, title=f"export {name}")
        if job_id is not None:
            st.session_state["sft_job"] = job_id

    @st.fragment(run_every=2)
    def export_jobs() -> None:
        """Job progress and the exports list together, so a finished export shows up without a rerun."""
        for job in list_jobs(store, kind="export-sft", limit=3):
            job_progress(job)
            if job.status == "finished" and job.result:
                st.caption(f"{job.result.get('counts', {}).get('total')} rows written to "
                           f"{md_escape(str(job.result.get('path')))}")
        exports = list_exports(store, "sft")
        if exports:
            st.markdown("**SFT exports**")
            st.dataframe(pd.DataFrame([{"name": e["name"], "rows": e["rows"],
                                        "models": ", ".join(e["card"].get("models", [])),
                                        "path": e["path"], "created_at": age(e["created_at"])} for e in exports]),
                         hide_index=True, width="stretch")

    export_jobs()
