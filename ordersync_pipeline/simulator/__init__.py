"""A faithful TOP gateway over real HTTP: seeded shops, a clock, faults, lag, page drift, TMC.

    from ordersync_pipeline.simulator import SimulatorSettings, start_simulator
    with start_simulator(SimulatorSettings(seed=7, shops=2)) as sim:
        sim.gateway_url, sim.app_key, sim.app_secret, sim.shops, sim.world, sim.clock, sim.config()

Modules: settings (knobs), clock, plan (seeded catalogue + trade timelines + details), render (a
trade's state at time t), world (columns + indexes + ground truth), envelope (projection, fragment
cache, envelopes), listing (the list APIs' compiled renderer: projected trade JSON without trade
dicts, byte-identical to render + envelope), apis (the TOP methods), faults, tmc, gateway (HTTP +
platform rules), admin, server.
No Dagster imports here.
"""

from ordersync_pipeline.simulator.server import Simulator, start_simulator
from ordersync_pipeline.simulator.settings import SimShop, SimulatorSettings

__all__ = ["SimShop", "Simulator", "SimulatorSettings", "start_simulator"]
