"""outage-exporter: probe services per region over DNS, HTTP and TCP and export the results to Prometheus.

Data flow, one package per step::

    config/  ->  checks.py  ->  scheduler.py  ->  probers/  ->  results.py  ->  exposition/  ->  web/
    (YAML)      (check x      (when to run)     (run once,    (latest state   (Prometheus      (HTTP
                 target x                        plain result)  + counters)     text)            endpoints)
                 region)
"""

__version__ = "0.1.0"
