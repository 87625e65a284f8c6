"""The dashboard's Streamlit script (`app.py` serves it): whoever the session cookie names, or the
login form."""

from __future__ import annotations

import streamlit as st

from dashboard.shell import show
from services.ops import auth
from services.ops.sessions import COOKIE

show(auth.resolve(st.context.cookies.get(COOKIE)))
