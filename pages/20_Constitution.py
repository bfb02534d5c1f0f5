"""Constitution: edit principles (new version on save), diff versions, import/export, prompt sets."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from cai_core.constitution.actions import DuplicateConstitution, NewConstitution, RenameAsNew
from cai_core.constitution.files import build_import, dump_constitution
from cai_core.constitution.diff import diff_constitutions
from cai_core.constitution.versions import (
    get_constitution,
    list_constitutions,
    list_versions,
    save_edited,
    save_imported,
)
from cai_core.errors import CaiError
from cai_core.data.prompt_sets import (
    KINDS,
    delete_prompt_set,
    get_prompts,
    import_hf_dataset_column,
    import_prompt_set,
    list_prompt_sets,
    parse_prompts_text,
)
from ui import constitution as ce
from ui.command_preview import show_command
from ui.common import age, get_store, pick_current, read_upload, set_current_item, show_error
from ui.markdown import md_escape

store = get_store()
st.title("Constitution")
st.caption("A constitution is a named list of principles. Each save makes a new version (a content hash); "
           "old versions stay readable and any two can be compared.")

constitutions = list_constitutions(store)
names = [c["name"] for c in constitutions]

# -- pick constitution + version ---------------------------------------------------------------
# The Constitution box IS the workspace's current constitution (the sidebar's box shows the same one);
# the Version box is this page's own view. The edit widgets hold exactly one (name, version): its
# unsaved draft when there is one (ui.constitution.show), so switching away and back loses nothing.
if names:
    c1, c2 = st.columns([2, 3])
    with c1:
        name = pick_current(st, "constitution", "Constitution", names, key="ce_name",
                            help="The workspace's current constitution (the sidebar shows the same one): "
                                 "every page starts on it. Unsaved edits stay with their own version when "
                                 "you switch, and come back when you return.")
    versions = list_versions(store, name)
    vids = [v["version"] for v in versions]
    # a fixed saved time, not "12s ago": an option label that changes between reruns would not match the pick
    labels = {v["version"]: f"{v['version']} - {time.strftime('%Y-%m-%d %H:%M', time.localtime(v['created_at']))}"
                            + (f" - {v['note']}" if v["note"] else "") for v in versions}
    seen = st.session_state.setdefault("ce_version_of", {})  # name -> the version last shown here
    if st.session_state.get("ce_version_next") in vids:  # a version made below after the box was drawn
        st.session_state["ce_version"] = st.session_state.pop("ce_version_next")
    if st.session_state.get("ce_version") not in vids:
        st.session_state["ce_version"] = seen.get(name) if seen.get(name) in vids else vids[0]
    with c2:
        # labels fixed between reruns: a label that changes (e.g. "unsaved") no longer matches the pick
        version = st.selectbox("Version", vids, format_func=labels.get, key="ce_version", help="newest first")
    seen[name] = version
    ce.show(lambda n, v: get_constitution(store, n, v), name, version)
    ce.drafts_caption(name, version)
else:
    name = version = None
    st.info("No constitution yet: make one (New / duplicate / rename) or import one below (the samples load "
            "on the app's first start).")


# -- new / duplicate / rename as new -----------------------------------------------------------
MAKE = {"New": NewConstitution, "Duplicate": DuplicateConstitution, "Rename as new": RenameAsNew}


def _make_action():
    """The typed action the form describes (the same one `python -m cai_core constitution ...` builds)."""
    how, new = st.session_state.get("ce_make_how") or "New", (st.session_state.get("ce_make_name") or "").strip()
    if how == "New":
        return NewConstitution(name=new)
    return MAKE[how](source=f"{name}@{version}", name=new)


def _make() -> None:
    """Button callback: apply the action; the new name becomes current, so both boxes show it."""
    action = _make_action()
    try:
        made, made_version = action.apply(store)
    except CaiError as exc:
        st.session_state["ce_make_flash"] = ("error", str(exc))
        return
    st.session_state["ce_make_flash"] = ("success", f"{action.command}: {made!r} version {made_version} is now "
                                                    "the current constitution.")
    st.session_state["ce_version"] = made_version
    st.session_state["ce_make_name"] = ""


tab_edit, tab_versions, tab_make, tab_io, tab_prompts = st.tabs(
    ["Edit", "Versions and diff", "New / duplicate / rename", "Import / export", "Prompt sets"])


def _save() -> None:
    """Button callback: validate the draft, save a new version and select it."""
    loaded_name, parent = st.session_state["ce_loaded"]  # the (name, version) the widgets hold
    draft = ce.draft_constitution(loaded_name)
    problems = draft.problems()
    if problems:
        st.session_state["ce_flash"] = ("error", "Not saved: " + "; ".join(problems))
        return
    try:
        new_version, created = save_edited(store, draft, note=st.session_state.get("ce_note") or None,
                                           parent_version=parent)
    except CaiError as exc:
        st.session_state["ce_flash"] = ("error", f"Not saved: {exc}")
        return
    if created:
        st.session_state["ce_flash"] = ("success", f"Saved version {new_version}.")
        st.session_state["ce_note"] = ""
    else:
        st.session_state["ce_flash"] = ("info", f"No changes: this content is version {new_version}.")
    ce.forget_draft(loaded_name, parent)  # saved: the parent version has no unsaved edits any more
    st.session_state["ce_version"] = new_version
    st.session_state["ce_loaded"] = (draft.name, new_version)  # the widgets hold the new version's text
    set_current_item("constitution", draft.name)  # the one just edited is current everywhere


# -- edit --------------------------------------------------------------------------------------
with tab_edit:
    if name:
        flash = st.session_state.pop("ce_flash", None)
        if flash:
            getattr(st, flash[0])(md_escape(flash[1]))
        st.text_area("Description", key=f"ce{st.session_state['ce_gen']}_description", height=68)
        order = st.session_state["ce_order"]
        for pos, uid in enumerate(list(order)):
            p = ce.principle_from_state(uid)
            problems = p.problems()
            icon = ":material/error:" if problems else (":material/check_circle:" if p.enabled else ":material/block:")
            # key=: the block keeps its identity (and so its open state) while the id/name in the label is edited
            with st.expander(f"{pos + 1}. {md_escape(p.name or '(no name)')}  ·  {md_escape(p.id)}", expanded=bool(problems), icon=icon,
                             key=f"exp_{uid}"):
                with st.container(horizontal=True, vertical_alignment="center"):  # buttons at their own width
                    st.button("Up", key=f"up_{uid}", icon=":material/arrow_upward:", disabled=pos == 0,
                              on_click=ce.move, args=("ce_order", uid, -1))
                    st.button("Down", key=f"down_{uid}", icon=":material/arrow_downward:",
                              disabled=pos == len(order) - 1, on_click=ce.move, args=("ce_order", uid, 1))
                    st.button("Remove", key=f"rm_{uid}", icon=":material/delete:", on_click=ce.remove,
                              args=("ce_order", uid))
                    st.toggle("Enabled", key=ce.key(uid, "enabled"))
                r = st.columns([1, 2, 2])
                r[0].text_input("Id", key=ce.key(uid, "id"))
                r[1].text_input("Name", key=ce.key(uid, "name"))
                r[2].text_input("Tags (comma-separated)", key=ce.key(uid, "tags"))
                for fld, label in (("critique_request", "Critique request"), ("revision_request", "Revision request"),
                                   ("comparison_question", "Comparison question (judging phase)")):
                    text = st.text_area(label, key=ce.key(uid, fld), height=90)
                    ce.variables_caption(text, fld)
                for msg in problems:
                    st.error(md_escape(msg))
        st.button("Add principle", icon=":material/add:", on_click=ce.add_principle)

        st.subheader("Few-shot examples")
        st.caption("Optional worked examples shown before each critique/revision: a question, a response, its "
                   "critique and its revision, using one principle's requests.")
        ids = [""] + [st.session_state.get(ce.key(u, "id")) or "" for u in order]
        for pos, uid in enumerate(list(st.session_state["ce_few_order"])):
            with st.expander(f"Example {pos + 1}: {md_escape((st.session_state.get(ce.key(uid, 'question')) or '')[:60])}",
                             key=f"fexp_{uid}"):
                cols = st.columns([1, 1], vertical_alignment="bottom")
                with cols[0].container(horizontal=True):
                    st.button("Up", key=f"fup_{uid}", disabled=pos == 0, on_click=ce.move,
                              args=("ce_few_order", uid, -1))
                    st.button("Down", key=f"fdown_{uid}", disabled=pos == len(st.session_state["ce_few_order"]) - 1,
                              on_click=ce.move, args=("ce_few_order", uid, 1))
                    st.button("Remove", key=f"frm_{uid}", on_click=ce.remove, args=("ce_few_order", uid))
                pid_key = ce.key(uid, "principle_id")
                if st.session_state.get(pid_key) not in ids:
                    ids.append(st.session_state.get(pid_key))
                cols[1].selectbox("Principle", ids, key=pid_key, format_func=lambda v: v or "(first enabled)")
                for fld in ("question", "response", "critique", "revision"):
                    st.text_area(fld.capitalize(), key=ce.key(uid, fld), height=80)
                st.caption("The example's own requests (the paper's examples carry them); empty = the "
                           "principle's requests.")
                st.text_area("Its critique request", key=ce.key(uid, "critique_request"), height=68)
                st.text_area("Its revision request", key=ce.key(uid, "revision_request"), height=68)
        st.button("Add few-shot example", icon=":material/add:", on_click=ce.add_few_shot)

        st.subheader("Judge examples")
        st.caption("Worked comparisons shown to the AI judge before each pair (the paper's judge is few-shot: "
                   "RLMadisonFewShotPrompts.json for mc, RLMadisonPrecogFewShotPrompts.json for cot). Used by "
                   "default whenever the constitution has them; they are part of the version and the judge key.")
        judge_order = list(st.session_state.setdefault("ce_judge_order", []))
        for pos, uid in enumerate(judge_order):
            ce.judge_example_editor(pos, uid, len(judge_order))
        st.button("Add judge example", icon=":material/add:", on_click=ce.add_judge_example)

        st.divider()
        draft = ce.draft_constitution(name)
        all_problems = draft.problems()
        changed = draft.version != version
        if all_problems:  # named here: a duplicate id or an empty example shows on no principle's expander
            st.warning(f"{len(all_problems)} problem(s) to fix before saving:\n"
                       + "\n".join(f"- {md_escape(msg)}" for msg in all_problems))
        elif changed:
            st.caption(f"Unsaved changes: saving makes version {draft.version} (parent {version}).")
        s1, s2, s3 = st.columns([3, 1.2, 1], vertical_alignment="bottom")
        s1.text_input("Note for this version", key="ce_note", placeholder="what changed and why")
        s2.button("Save new version", type="primary", key="ce_save", on_click=_save,
                  disabled=not changed and not all_problems)
        s3.button("Discard edits", key="ce_discard", on_click=ce.discard, args=(name, version),
                  disabled=not changed, help=f"Back to the text of version {version} as saved")
        ce.remember_draft()  # kept under (name, version) for a switch or another page and back

# -- versions and diff -------------------------------------------------------------------------
with tab_versions:
    if name:
        st.dataframe(pd.DataFrame([{"version": v["version"], "saved": age(v["created_at"]), "parent": v["parent_version"] or "-",
                                    "note": v["note"]} for v in versions]), hide_index=True, width="stretch")
        if len(versions) < 2:
            st.info("Only one version so far: save an edit to compare versions.")
        else:
            d1, d2 = st.columns(2)
            # keyed by the constitution and its number of versions: another constitution, or a new save,
            # starts on newest vs the one before instead of keeping picks from another list
            diff_key = f"{name}\x1f{len(vids)}"
            old_v = d1.selectbox("Old", list(labels), index=1, format_func=labels.get, key=f"ce_diff_old_{diff_key}")
            new_v = d2.selectbox("New", list(labels), index=0, format_func=labels.get, key=f"ce_diff_new_{diff_key}")
            ce.render_changes(diff_constitutions(get_constitution(store, name, old_v), get_constitution(store, name, new_v)))

# -- new / duplicate / rename as new (the actions above) --------------------------------------
with tab_make:
    st.caption("A constitution under a new name: its first version is saved at once and it becomes the "
               "current constitution.")
    m1, m2, m3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    m1.radio("Make", list(MAKE) if names else ["New"], horizontal=True, key="ce_make_how",
             help="New: one starter principle to edit. Duplicate: a copy of the version shown under a new name. "
                  "Rename as new: the version shown continues under a new name; the old name's versions stay "
                  "stored and listed (runs and judgments name them).")
    m2.text_input("New name", key="ce_make_name", placeholder="my_constitution")
    m3.button("Create", key="ce_make", on_click=_make, disabled=not (st.session_state.get("ce_make_name") or "").strip())
    make_flash = st.session_state.pop("ce_make_flash", None)
    if make_flash:
        (st.error if make_flash[0] == "error" else st.success)(md_escape(make_flash[1]))
    if names and st.session_state.get("ce_make_how", "New") != "New" and ce.has_draft(name, version):
        st.caption(f"Copies version {version} as saved: the unsaved edits stay with {md_escape(name)} @ {version} "
                   "(save them first to carry them over).")
    if (st.session_state.get("ce_make_name") or "").strip():
        show_command(store, _make_action().to_argv(), note="The same from a shell:")


# -- import / export ---------------------------------------------------------------------------
with tab_io:
    st.subheader("Import")
    st.caption("This project's YAML/JSON, or the CAI paper's CritiqueRevisionInstructions.json, "
               "RLMadisonInstructions.json (comparison questions, kept as their own list) or "
               "CritiqueRevisionFewShotPrompts.json. Few-shot files: CritiqueRevisionFewShotPrompts.json "
               "(critique examples) and RLMadisonFewShotPrompts.json / RLMadisonPrecogFewShotPrompts.json "
               "(judge examples).")
    up = st.file_uploader("Constitution file", type=["yaml", "yml", "json"], key="ce_upload")
    i1, i2, i3 = st.columns(3)
    new_name = i1.text_input("Store as name (optional)", key="ce_import_name")
    comp_up = i2.file_uploader("Comparison questions (optional)", type=["json", "yaml", "yml"], key="ce_upload_cmp")
    few_ups = i3.file_uploader("Few-shot / judge examples (optional)", type=["json", "yaml", "yml"],
                               key="ce_upload_few", accept_multiple_files=True) or []
    if st.button("Import", disabled=up is None, key="ce_import"):
        try:
            def _text(f):
                return read_upload(f, ("json", "yaml"))

            imported = build_import(_text(up), up.name, name=new_name.strip() or None,
                                    comparisons=(_text(comp_up), comp_up.name) if comp_up else None,
                                    few_shot=[(_text(f), f.name) for f in few_ups])
            v = save_imported(store, imported, note=f"imported from {up.name}")
        except CaiError as exc:
            show_error(exc)
        else:
            # current, and a rerun: the pickers above were drawn before the import
            set_current_item("constitution", imported.name)  # both boxes read it before they are drawn
            st.session_state["ce_version_next"] = v  # the version just imported, set before the rerun draws its box
            st.session_state["ce_import_flash"] = (
                f"Imported {md_escape(repr(imported.name))} version {v} ({len(imported.principles)} principles, "
                f"{len(imported.few_shot)} few-shot examples, {len(imported.judge_examples)} judge examples).")
            st.rerun()
    if st.session_state.get("ce_import_flash"):
        st.success(st.session_state.pop("ce_import_flash"))
    if name:
        st.subheader("Export")
        fmt = st.radio("Format", ["yaml", "json"], horizontal=True, key="ce_export_fmt")
        current = get_constitution(store, name, version)
        st.download_button(f"Download {md_escape(name)} {version}.{fmt}", dump_constitution(current, fmt),
                           file_name=f"{name}-{version}.{fmt}", mime="application/json" if fmt == "json" else "text/yaml",
                           icon=":material/download:")

# -- prompt sets -------------------------------------------------------------------------------
def _imported(button: str, set_name: str, message: str) -> None:
    """Show the new set at once: the sets table and picker above were drawn before the import."""
    st.session_state["ps_flash"] = (button, message)
    st.session_state["ps_show_next"] = set_name  # the picker exists already in this run: set it in the next
    set_current_item("prompt_set", set_name)  # and current: every page's prompt set pickers start on it
    st.rerun()


def _flash(button: str) -> None:
    if st.session_state.get("ps_flash", (None,))[0] == button:
        st.success(md_escape(st.session_state.pop("ps_flash")[1]))


with tab_prompts:
    if "ps_show_next" in st.session_state:
        st.session_state["ps_show"] = st.session_state.pop("ps_show_next")
    sets = list_prompt_sets(store)
    if sets:
        st.dataframe(pd.DataFrame([{"name": s["name"], "kind": s["kind"], "prompts": s["prompts"], "source": s["source"],
                                    "created": age(s["created_at"])} for s in sets]),
                     hide_index=True, width="stretch")
        v1, v2, v3 = st.columns([3, 1, 1], vertical_alignment="bottom")
        shown = v1.selectbox("Show prompts of", [s["name"] for s in sets], key="ps_show")
        confirm_key = f"ps_delete_ok_{shown}"
        confirm = v2.checkbox("confirm delete", key=confirm_key)  # one click should not lose a set
        if v3.button("Delete this set", key="ps_delete", icon=":material/delete:", disabled=not confirm):
            delete_prompt_set(store, shown)
            st.session_state.pop(confirm_key, None)
            st.rerun()
        prompts = get_prompts(store, shown)
        st.dataframe(pd.DataFrame([{"#": p["idx"], "category": p["category"], "prompt": p["text"]} for p in prompts]),
                     hide_index=True, width="stretch", height=260)
    else:
        st.info("No prompt sets yet.")

    st.subheader("Import prompts")
    f_up = st.file_uploader("JSONL ('prompt' field), CSV (prompt column) or TXT (one per line)",
                            type=["jsonl", "csv", "txt"], key="ps_upload")
    p1, p2, p3 = st.columns([2, 1, 1])
    ps_name = p1.text_input("Set name", key="ps_name")
    ps_kind = p2.selectbox("Kind", KINDS, key="ps_kind")
    ps_replace = p3.checkbox("Replace if it exists", key="ps_replace")
    if st.button("Import prompt file", disabled=f_up is None, key="ps_import"):
        try:
            items = parse_prompts_text(read_upload(f_up, ("jsonl", "csv", "text")), f_up.name)
            import_prompt_set(store, ps_name, items, kind=ps_kind, source=f"upload:{f_up.name}", replace=ps_replace)
            _imported("ps_import", ps_name, f"Imported {len(items)} prompts as {ps_name!r}.")
        except CaiError as exc:
            show_error(exc)
    _flash("ps_import")

    st.subheader("Import a HF dataset column")
    h1, h2, h3 = st.columns([3, 1, 1])
    hf_path = h1.text_input("Dataset folder (saved with save_to_disk)", key="hf_path")
    hf_col = h2.text_input("Column", value="prompt", key="hf_col")
    hf_split = h3.text_input("Split", value="train", key="hf_split")
    h4, h5 = st.columns([2, 1])
    hf_name = h4.text_input("Set name", key="hf_name")
    hf_kind = h5.selectbox("Kind", KINDS, key="hf_kind")
    if st.button("Import dataset column", disabled=not (hf_path and hf_name), key="hf_import"):
        try:
            import_hf_dataset_column(store, hf_name, hf_path.strip(), hf_col.strip(), split=hf_split.strip() or "train",
                                     kind=hf_kind)
            _imported("hf_import", hf_name, f"Imported {len(get_prompts(store, hf_name))} prompts as {hf_name!r}.")
        except CaiError as exc:
            show_error(exc)
    _flash("hf_import")
