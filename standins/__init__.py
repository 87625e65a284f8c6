"""Local stand-ins for the outside sources (kolscan.io and the X API), served on 127.0.0.1.

They exist for tests and the demo only; the product reaches them through KOLSCAN_BASE_URL and
X_API_BASE_URL exactly as it would reach the real sites.
"""
