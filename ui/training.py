"""Streamlit pieces of the Training page: the new-run form, run list, live charts, samples, compare.

All decisions (validation, launching, status, which curves a kind has) come from cai_core.training;
this module only lays out widgets and plotly figures. Model output (probe answers, logs) is shown
with st.dataframe / st.code, never as HTML.
"""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from cai_core.commands.train import train_args
from cai_core.exports import list_exports
from cai_core.training import metrics as tm
from cai_core.training import runs as tr
from cai_core.training.specs import DATA_NEEDS, KIND_HELP, KINDS, SPEC_CLASSES, field_help, new_spec
from ui.command_preview import show_command
from ui.markdown import md_escape

# Streamlit's bundled Material icons: they render without an emoji font (markdown only, not table cells).
STATUS_ICON = {"queued": ":material/schedule:", "running": ":material/play_circle:",
               "finished": ":material/check_circle:", "stopped": ":material/stop_circle:",
               "failed": ":material/error:"}
POLICY_KINDS = ("sft", "dpo", "ppo", "rloo", "grpo")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def fmt_count(n) -> str:
    """A parameter count in the unit that keeps its digits (a 35 K model read '0.0 M' next to '0.02 M' trainable)."""
    n = float(n or 0)
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.{2 if size == 1e9 else 1}f} {unit}"
    return f"{n:.0f}"


def fmt_value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# -- new run --------------------------------------------------------------------------------------
def _export_options(store, kind: str) -> list[str]:
    need = DATA_NEEDS[kind]
    rows = list_exports(store)
    if need in ("sft", "preference"):
        return [r["name"] for r in rows if r["kind"] == need]
    return [r["name"] for r in rows if r["kind"] in ("sft", "preference")]


def _model_runs(store, kinds) -> list[str]:
    return [r.name for r in tr.list_runs(store) if r.kind in kinds and r.status in ("finished", "stopped")]


def new_run_form(store, default_model: str) -> None:
    """Pick kind, model / parent run, dataset, adapter mode and hyper-parameters; preview; launch."""
    kind = st.selectbox("Run kind", KINDS, key="tr_kind", format_func=lambda k: f"{k.upper()} - {KIND_HELP[k]}",
                        help="What to train. The CAI recipe: SFT on revisions -> reward model on AI preferences "
                             "-> PPO (or DPO / RLOO / GRPO) from the SFT policy.")
    helps = field_help(kind)
    defaults = SPEC_CLASSES[kind]()
    values: dict = {}

    c1, c2 = st.columns(2)
    with c1:
        source = st.radio("Start from", ["Base model", "Parent run"], horizontal=True, key="tr_source",
                          help="A base model, or the output of an earlier run (e.g. PPO starts from the SFT run).")
        if source == "Parent run":
            parents = _model_runs(store, POLICY_KINDS if kind != "reward" else KINDS)
            if parents:
                values["parent_run"] = st.selectbox("Parent run", parents, key="tr_parent", help=helps["parent_run"])
            else:
                st.info("No finished or stopped runs with a saved model yet.")
        else:
            values["model"] = st.text_input("Base model", value=default_model if not default_model.startswith(
                "http") else "default", key="tr_model", help=helps["model"])
        exports = _export_options(store, kind)
        other = "Other: a .jsonl file or HF folder"
        choice = st.selectbox("Dataset", exports + [other], key="tr_dataset_choice",
                              help=helps["dataset"] + f" This kind needs {DATA_NEEDS[kind]} data.")
        values["dataset"] = (st.text_input("Dataset path", key="tr_dataset_path", help=helps["dataset"])
                             if choice == other else choice)
        if kind in ("ppo", "rloo", "grpo"):
            rms = _model_runs(store, ("reward",))
            values["reward_model"] = (st.selectbox("Reward model", rms, key="tr_reward", help=helps["reward_model"])
                                      if rms else st.text_input("Reward model folder", key="tr_reward_path",
                                                                help=helps["reward_model"]))
    with c2:
        adapters = ["lora", "full"] + (["qlora"] if kind not in ("reward", "ppo") else [])
        values["adapter"] = st.radio("Adapter", adapters, horizontal=True, key="tr_adapter", help=helps["adapter"])
        values["name"] = st.text_input("Run name (optional)", key="tr_name", help=helps["name"]) or None
        values["max_steps"] = st.number_input("Max steps (-1 = use epochs)", value=defaults.max_steps, min_value=-1,
                                              step=10, key="tr_max_steps", help=helps["max_steps"])
        values["epochs"] = st.number_input("Epochs", value=float(defaults.epochs), min_value=0.1, step=0.5,
                                           key="tr_epochs", help=helps["epochs"])
        lr = st.text_input("Learning rate (empty = default)", key="tr_lr", help=helps["learning_rate"])
        values["learning_rate"] = lr.strip() or None

    with st.expander("Hyper-parameters", expanded=False):
        h1, h2, h3 = st.columns(3)
        with h1:
            values["batch_size"] = st.number_input("Batch size", value=defaults.batch_size, min_value=1,
                                                   key="tr_bs", help=helps["batch_size"])
            values["grad_accum"] = st.number_input("Gradient accumulation", value=defaults.grad_accum, min_value=1,
                                                   key="tr_ga", help=helps["grad_accum"])
            values["max_length"] = st.number_input("Max length (tokens)", value=defaults.max_length, min_value=16,
                                                   step=64, key="tr_maxlen", help=helps["max_length"])
            values["seed"] = st.number_input("Seed", value=defaults.seed, key="tr_seed", help=helps["seed"])
        with h2:
            if values["adapter"] != "full":
                values["lora_r"] = st.number_input("LoRA r", value=defaults.lora_r, min_value=1, key="tr_r",
                                                   help=helps["lora_r"])
                values["lora_alpha"] = st.number_input("LoRA alpha", value=defaults.lora_alpha, min_value=1,
                                                       key="tr_alpha", help=helps["lora_alpha"])
                values["lora_dropout"] = st.number_input("LoRA dropout", value=defaults.lora_dropout, min_value=0.0,
                                                         max_value=0.9, step=0.05, key="tr_ldrop",
                                                         help=helps["lora_dropout"])
                values["lora_targets"] = st.text_input("LoRA targets", value=defaults.lora_targets,
                                                       key="tr_targets", help=helps["lora_targets"])
            values["save_steps"] = st.number_input("Checkpoint every N steps", value=defaults.save_steps,
                                                   min_value=1, key="tr_save", help=helps["save_steps"])
            values["eval_split"] = st.number_input("Held-out share", value=float(defaults.eval_split), min_value=0.0,
                                                   max_value=0.5, step=0.05, key="tr_eval", help=helps["eval_split"])
        with h3:
            if kind in ("ppo", "rloo", "grpo"):
                values["kl_coef"] = st.number_input("KL coefficient", value=float(defaults.kl_coef), min_value=0.0,
                                                    step=0.01, format="%.3f", key="tr_kl", help=helps["kl_coef"])
                values["response_length"] = st.number_input("Response length", value=defaults.response_length,
                                                            min_value=1, key="tr_resp", help=helps["response_length"])
                values["temperature"] = st.number_input("Temperature", value=float(defaults.temperature),
                                                        min_value=0.05, step=0.1, key="tr_temp",
                                                        help=helps["temperature"])
            if kind in ("rloo", "grpo"):
                values["num_generations"] = st.number_input("Generations per prompt", value=defaults.num_generations,
                                                            min_value=2, key="tr_ngen", help=helps["num_generations"])
            if kind == "dpo":
                values["beta"] = st.number_input("Beta", value=float(defaults.beta), min_value=0.0, step=0.05,
                                                 key="tr_beta", help=helps["beta"])
            values["precision"] = st.selectbox("Precision", ["auto", "fp32", "bf16", "fp16"], key="tr_prec",
                                               help=helps["precision"])
            values["report_to"] = st.selectbox("Also report to", ["none", "tensorboard", "wandb"], key="tr_report",
                                               help=helps["report_to"])
        probes = st.text_area("Probe prompts (one per line)", value="\n".join(defaults.probe_prompts),
                              key="tr_probes", help=helps["probe_prompts"])
        values["probe_prompts"] = [p.strip() for p in probes.splitlines() if p.strip()]
        values["probe_steps"] = st.number_input("Probe every N steps", value=defaults.probe_steps, min_value=0,
                                                key="tr_probe_steps", help=helps["probe_steps"])

    try:
        spec = new_spec(kind, **{k: v for k, v in values.items() if v is not None})
    except Exception as exc:  # noqa: BLE001 - a form value of the wrong type
        st.error(md_escape(str(exc)))
        return
    plan = tr.preview(store, spec)
    memory_estimate(plan["memory"])
    show_command(store, train_args(spec), note="The same run from a shell (e.g. on a cluster node): it records "
                                              "this spec, as the Launch button does, and trains in the foreground:")
    if plan["problems"]:
        st.warning("Fix before launching:\n\n" + "\n".join(f"- {md_escape(p)}" for p in plan["problems"]))
    if st.button("Launch run", type="primary", key="tr_launch", disabled=bool(plan["problems"])):
        try:
            run = tr.launch(store, spec)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            from ui.common import show_error

            show_error(exc)
            return
        # show it at once in the Runs tab (the run list above was read before the launch)
        st.session_state["tr_selected"] = run.id
        st.session_state["tr_goto_runs"] = True
        # kept while this run stays picked: the page reruns at the run's first status change, and a
        # one-shot message vanished before it could be read (a tiny run finishes in seconds)
        st.session_state["tr_launched"] = {"run_id": run.id, "text": f"Run {run.name} started (pid {run.pid}). "
                                                                     "It keeps running if you close the browser."}
        st.rerun()


def memory_estimate(mem: dict) -> None:
    """The estimate before launch: total against what the device has, and the breakdown."""
    total = mem["total_mb"]
    label = f"~{total / 1024:.2f} GB" if total > 1024 else f"~{total:.0f} MB"
    cols = st.columns(4)
    cols[0].metric("Memory estimate", label, help="Peak: weights, gradients, AdamW states, activations, the extra "
                                                  "models of the kind (reference, reward, value), and the "
                                                  "runtime (torch and friends; the CUDA context on a GPU).")
    cols[1].metric("Parameters", fmt_count(mem["params"]))
    cols[2].metric("Trainable", fmt_count(mem["trainable_params"]))
    cols[3].metric("Device / precision", f"{mem['device']} / {mem['precision']}")
    parts = {k[:-3].replace("_", " "): round(v, 1) for k, v in mem.items()
             if k.endswith("_mb") and k not in ("total_mb", "available_mb", "allocated_mb", "advice_total_mb")}
    st.caption(" · ".join(f"{k} {v:g} MB" for k, v in parts.items()))
    verdict = memory_verdict(mem)
    if mem.get("fits") is False:
        st.warning(verdict)
    elif mem.get("fits"):
        st.success(verdict)
    else:
        st.caption(verdict)


def memory_verdict(mem: dict) -> str:
    """Before launch, in words: whether the run fits the device and, if not, the first setting to change."""
    total, avail, device = mem["total_mb"], mem.get("available_mb"), mem["device"]
    where = "the GPU" if device == "cuda" else "this machine" if device == "cpu" else device
    if mem.get("fits") is None:
        return f"Needs about {total:,.0f} MB; how much {where} has is unknown, so whether it fits is not checked."
    if mem["fits"]:
        return f"Fits: about {total:,.0f} MB needed of {avail:,.0f} MB on {where}."
    text = f"Does not fit: about {total:,.0f} MB needed, {avail:,.0f} MB on {where}."
    if mem.get("advice"):
        after = mem.get("advice_total_mb")
        text += (f" First change: {mem['advice']} (about {after:,.0f} MB"
                 + (", fits)." if mem.get("advice_fits") else "; not enough alone - change more settings)."))
    else:
        text += " No single setting brings it under; use a smaller model or a bigger device."
    return text


# -- run list and details -------------------------------------------------------------------------
def run_table(store, runs) -> None:
    rows = []
    for r in runs:
        lin = tr.lineage(store, r)
        rows.append({
            "id": r.id, "run": r.name, "kind": r.kind, "status": r.status,
            "duration": fmt_duration(r.duration_s),
            "key metrics": ", ".join(f"{k}={fmt_value(v)}" for k, v in r.key_metrics().items()),
            "dataset": (lin.get("export") or {}).get("name") or lin.get("dataset"),
            "parent": lin.get("parent_run") or lin.get("model"),
        })
    st.dataframe(rows, hide_index=True, width="stretch")


def metric_figure(metrics: list[dict], title: str, keys: list[str]) -> go.Figure | None:
    fig = go.Figure()
    scale = None  # magnitude of the first curve; one of a very different size gets its own axis
    for key in keys:
        steps, values = tm.series(metrics, key)
        if not steps:
            continue
        size = max((abs(v) for v in values if v == v), default=0.0)
        own_axis = bool(scale) and bool(size) and not (0.1 <= size / scale <= 10)
        scale = scale or size
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=key,
                                 yaxis="y2" if own_axis else "y"))
    if not fig.data:
        return None
    fig.update_layout(title=title, height=260, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="step",
                      legend=dict(orientation="h", y=-0.3))
    if any(t.yaxis == "y2" for t in fig.data):  # e.g. steps/s next to tokens/s
        fig.update_layout(yaxis2=dict(overlaying="y", side="right", showgrid=False))
    return fig


def live_charts(run, metrics: list[dict]) -> None:
    warning = tm.kl_warning(metrics)
    if warning:
        st.warning(warning)
    figs = [f for f in (metric_figure(metrics, title, keys) for title, keys in tm.chart_groups(run.kind)) if f]
    if not figs:
        st.info("No metrics logged yet - the first appear after the first optimizer step.")
        return
    cols = st.columns(2)
    for i, fig in enumerate(figs):
        with cols[i % 2]:
            st.plotly_chart(fig, key=f"tr_chart_{run.id}_{i}")


def samples_view(run) -> None:
    samples = tr.read_samples(run)
    if not samples:
        st.caption("No probe samples yet (a reward model does not generate).")
        return
    prompts = list(dict.fromkeys(s["prompt"] for s in samples))
    prompt = st.selectbox("Probe prompt", prompts, key=f"tr_probe_{run.id}",
                          help="The same fixed prompts are answered greedily every few steps: watch the policy change.")
    # newest first, one answer per step (a stop and the resume both probe the same step)
    by_step = {s["step"]: s["text"] for s in samples if s["prompt"] == prompt}
    for step in sorted(by_step, reverse=True)[:12]:
        with st.container(border=True):
            st.caption(f"step {step}")
            if by_step[step].strip():
                st.text(by_step[step])
            else:  # an empty box reads as a display bug; an untrained model often answers only newlines
                st.caption(f"(empty answer: {len(by_step[step])} whitespace characters, no text)")


def run_controls(store, run) -> None:
    """Stop / kill while active; resume / delete when ended."""
    cols = st.columns(4)
    if run.active:
        if cols[0].button("Stop (save and exit)", key=f"tr_stop_{run.id}",
                          help="Graceful: saves a checkpoint and the model at the next step, then exits."):
            _act(lambda: tr.stop_run(store, run.id), "stop requested: saving at the next step")
        if cols[1].button("Kill now", key=f"tr_kill_{run.id}", help="SIGKILL: immediate, nothing saved."):
            _act(lambda: tr.kill_run(store, run.id), "killed")
        return
    ckpt = tr.latest_checkpoint(run.run_dir)
    if ckpt is not None:
        step = tr.checkpoint_step(ckpt)
        spec_max = int(run.spec.get("max_steps", -1) or -1)
        new_max = cols[1].number_input("Resume until step", min_value=step + 1,
                                       value=max(step + 1, spec_max if spec_max > step else step + 100),
                                       key=f"tr_resume_steps_{run.id}",
                                       help="Total steps after resuming (must be past the checkpoint).")
        if cols[0].button(f"Resume from {md_escape(ckpt.name)}", key=f"tr_resume_{run.id}"):
            _act(lambda: tr.resume_run(store, run.id, max_steps=int(new_max)), "resumed")
    confirm = cols[2].checkbox("confirm delete", key=f"tr_del_ok_{run.id}")
    if cols[3].button("Delete run", key=f"tr_delete_{run.id}", disabled=not confirm,
                      help="Forget the run and remove its folder."):
        _act(lambda: tr.delete_run(store, run.id), "deleted")
        st.session_state.pop("tr_selected", None)
        st.rerun()


def _act(fn, message: str) -> None:
    from ui.common import show_error

    try:
        fn()
        st.toast(message)
    except Exception as exc:  # noqa: BLE001 - shown to the user
        show_error(exc)


def run_details(store, run_id: int):
    """Status, controls, lineage, live charts and samples of one run (the page refreshes it every 3 s)."""
    tr.refresh(store)
    try:
        run = tr.get_run(store, run_id)
    except Exception:  # noqa: BLE001 - deleted meanwhile
        st.info("This run no longer exists.")
        return None
    metrics = tr.read_metrics(store, run.id)
    last = tm.latest(metrics)
    st.markdown(f"**{md_escape(run.name)}** · {run.kind} · {STATUS_ICON.get(run.status, '')} {run.status} · "
                f"step {last.get('step', 0)} · {fmt_duration(run.duration_s)}")
    st.caption(f"folder: {md_escape(str(run.run_dir))}")
    if run.status == "failed" and run.error:
        st.error(md_escape(f"failed: {run.error}"))
    run_controls(store, run)
    tab_charts, tab_samples, tab_lineage, tab_log = st.tabs(["Charts", "Samples", "Lineage", "Log"])
    with tab_charts:
        live_charts(run, metrics)
    with tab_samples:
        samples_view(run)
    with tab_lineage:
        st.json(tr.lineage(store, run))
        st.code(run.command or "", language="bash")
    with tab_log:
        from cai_core.jobs.supervisor import log_tail

        st.code(log_tail(run.paths.log, 60) or run.log_tail or "(no log)", language="text")
    return run


def compare(store, runs) -> None:
    """Several runs' curves of one metric on one chart."""
    names = {r.name: r for r in runs}
    chosen = st.multiselect("Runs", list(names), default=list(names)[:2], key="tr_cmp_runs")
    if not chosen:
        return
    data = {n: tr.read_metrics(store, names[n].id) for n in chosen}
    keys = list(dict.fromkeys(k for m in data.values() for k in tm.metric_keys(m)))
    if not keys:
        st.info("These runs have no metrics yet.")
        return
    key = st.selectbox("Metric", keys, index=keys.index("loss") if "loss" in keys else 0, key="tr_cmp_metric")
    fig = go.Figure()
    for n, m in data.items():
        steps, values = tm.series(m, key)
        if steps:
            fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=n))
    fig.update_layout(title=key, xaxis_title="step", height=380, margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(fig, key="tr_cmp_chart")
