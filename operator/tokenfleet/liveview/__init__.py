"""The live view: one browser page of the fleet (tanks, pools, replicas, moves, tokens/s, energy),
served by the gateway at ``/live`` from what the operator already publishes."""
