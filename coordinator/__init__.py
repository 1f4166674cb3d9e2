"""The long-lived coordinator daemon: FSM engine, jobs, launchers and the ExCamera encode FSM.

Not written yet.
"""
