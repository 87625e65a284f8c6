"""Jobs: every scheduled job's last run, result and next run; failures; scheduler instances;
storage and retention (the policy, the last retention run and what it removed, disk used)."""

from __future__ import annotations

import streamlit as st

from pages.ui import size
from services.ops import jobs
from services.views.freshness import job_schedule
from services.views.storage import storage
from services.vocabulary import JobStatus

TTL_S = 5
RUNS = 100

schedule = st.cache_data(ttl=TTL_S, show_spinner=False)(job_schedule)
state = st.cache_data(ttl=TTL_S, show_spinner=False)(jobs.scheduler_state)
recent_runs = st.cache_data(ttl=TTL_S, show_spinner=False)(jobs.recent_runs)
# Sizes move slowly; walking the artifacts folder is not free.
disk = st.cache_data(ttl=60, show_spinner=False)(storage)

st.title("Jobs")

sched = state()
if sched.leader_age_s is None:
    st.error("No scheduler leader is running: nothing timed happens.")
elif sched.leader_age_s > 30:
    st.warning(f"The leader's heartbeat is {int(sched.leader_age_s)}s old.")
else:
    st.success(f"Scheduler leader alive, heartbeat {int(sched.leader_age_s)}s ago.")

st.subheader("Schedule")
table = schedule()
late = [j["job"] for j in table if j["late"]]
if late:
    st.warning("Late: " + ", ".join(late))
st.dataframe(table, hide_index=True, width="stretch")

st.subheader("Scheduler instances")
st.dataframe(sched.instances, hide_index=True, width="stretch")

st.subheader("Storage and retention")
store = disk()
db_col, art_col = st.columns(2)
db_col.metric("Database on disk", size(store.database_bytes))
art_col.metric("Failure artifacts on disk", size(store.artifact_bytes))
last = store.last_run
if last is None:
    st.info("Retention has not run yet.")
else:
    when = f"{last.started_at:%Y-%m-%d %H:%M} UTC"
    if last.status == JobStatus.SUCCESS:
        counts = last.counts
        st.success(
            f"Last retention run {when}: database {size(counts.get('db_bytes_before', 0))}"
            f" before, {size(counts.get('db_bytes_after', 0))} after;"
            f" artifacts {size(counts.get('artifact_bytes_after', 0))} after."
        )
        st.dataframe(
            [
                {"removed": label, "count": size(n) if key == "artifact_bytes" else f"{n:,}"}
                for key, label, n in last.removed
            ],
            hide_index=True,
            width="stretch",
        )
    else:
        st.error(f"Last retention run {when}: {last.status}.")
        if last.error:
            st.code(last.error, language=None)
st.caption("The policy (the RETENTION_* and RESETTLE_WINDOW_DAYS settings)")
st.dataframe(store.policy, hide_index=True, width="stretch")
st.caption("Largest tables")
st.dataframe(
    [
        {"table": t["table"], "rows (estimate)": t["rows_estimate"], "size": size(t["bytes"])}
        for t in store.tables
    ],
    hide_index=True,
    width="stretch",
)

st.subheader("Recent runs")
job = st.selectbox("Job", ["(all)", *(j["job"] for j in table)], key="jobs_filter")
only_failed = st.toggle("Failures only", key="jobs_failed")
runs = recent_runs(job=None if job == "(all)" else job, limit=RUNS)
if only_failed:
    runs = [r for r in runs if r["status"] not in (JobStatus.SUCCESS, JobStatus.RUNNING)]
st.dataframe(runs, hide_index=True, width="stretch")
st.caption(f"The latest {RUNS} runs{' (failures among them)' if only_failed else ''}.")
