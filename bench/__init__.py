"""`make bench`: measured latency of our server against Pipecat's standard wiring.

Run `python -m bench --help`. Modules: `questions` (the scripted caller's speech),
`harness` (launch servers, drive them like a microphone, measure), `reference` (the
standard wiring, served by its own app), `report` (tables, JSON, plot, regression check).
"""
