"""Jobs: every scheduled job's last run, result and next run; failures; scheduler instances."""

from __future__ import annotations

import streamlit as st

from services.ops import jobs
from services.views.freshness import job_schedule
from services.vocabulary import JobStatus

TTL_S = 5
RUNS = 100

schedule = st.cache_data(ttl=TTL_S, show_spinner=False)(job_schedule)
state = st.cache_data(ttl=TTL_S, show_spinner=False)(jobs.scheduler_state)
recent_runs = st.cache_data(ttl=TTL_S, show_spinner=False)(jobs.recent_runs)

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

st.subheader("Recent runs")
job = st.selectbox("Job", ["(all)", *(j["job"] for j in table)], key="jobs_filter")
only_failed = st.toggle("Failures only", key="jobs_failed")
runs = recent_runs(job=None if job == "(all)" else job, limit=RUNS)
if only_failed:
    runs = [r for r in runs if r["status"] not in (JobStatus.SUCCESS, JobStatus.RUNNING)]
st.dataframe(runs, hide_index=True, width="stretch")
st.caption(f"The latest {RUNS} runs{' (failures among them)' if only_failed else ''}.")
