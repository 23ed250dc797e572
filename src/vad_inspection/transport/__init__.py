"""Transport: the Bus nodes are written against (topics, services, parameters, timers), its
bindings (local, dds, ros), and bags.

Importing this package loads no middleware: :func:`create_bus` imports Cyclone DDS or rclpy only
when that binding is chosen.
"""

from .bag import STORAGES, BagError, BagMessage, BagReader, BagWriter
from .bus import (
    KINDS,
    Bus,
    Publisher,
    Subscription,
    Timer,
    TransportError,
    create_bus,
)
from .clock import Clock, ManualClock
from .naming import InvalidNameError, dds_topic, dds_typename, resolve_topic
from .params import (
    ParameterError,
    Parameters,
    ParamType,
    load_parameter_file,
    parse_parameter_yaml,
)
from .qos import (
    DEFAULT,
    LATCHED,
    SENSOR_DATA,
    Durability,
    History,
    QoS,
    Reliability,
)
from .service import (
    PARAMETER_SERVICE_QOS,
    SERVICE_QOS,
    Client,
    ParameterServices,
    Service,
    ServiceError,
)

__all__ = [
    "DEFAULT",
    "KINDS",
    "LATCHED",
    "PARAMETER_SERVICE_QOS",
    "SENSOR_DATA",
    "SERVICE_QOS",
    "STORAGES",
    "BagError",
    "BagMessage",
    "BagReader",
    "BagWriter",
    "Bus",
    "Client",
    "Clock",
    "Durability",
    "History",
    "InvalidNameError",
    "ManualClock",
    "ParamType",
    "ParameterError",
    "ParameterServices",
    "Parameters",
    "Publisher",
    "QoS",
    "Reliability",
    "Service",
    "ServiceError",
    "Subscription",
    "Timer",
    "TransportError",
    "create_bus",
    "dds_topic",
    "dds_typename",
    "load_parameter_file",
    "parse_parameter_yaml",
    "resolve_topic",
]
