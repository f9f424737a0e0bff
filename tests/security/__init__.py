"""Abuse tests: each attack of the Security issue fails, and honest nodes keep exact scores."""
