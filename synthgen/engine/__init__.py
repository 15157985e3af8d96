"""Execution engines other than the local streaming one."""
