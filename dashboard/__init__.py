"""The dashboard's shell: the login, the navigation, and the routes that set the session cookie.

The Streamlit script lives here, in a folder without a `pages/` subfolder, so Streamlit's legacy
discovery of `pages/` (which runs a page file directly, before any login, on a server's first
request) never applies: every page runs only from the navigation `shell.show` builds after it
has resolved the visitor's session.
"""
