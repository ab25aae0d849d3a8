"""``tokenfleet simulate``: is a parked car a token factory?

A scenario (:mod:`~tokenfleet.simulate.scenario`) runs in virtual time
(:mod:`~tokenfleet.simulate.engine`) on the physical models of :mod:`tokenfleet.fleetsim`,
through the real placement engine; :mod:`~tokenfleet.simulate.summary` prices it and
:mod:`~tokenfleet.simulate.report` draws it.
"""
