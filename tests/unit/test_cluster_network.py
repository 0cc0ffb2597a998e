"""The local cluster's address plan: slots never overlap, and a cluster without a real node has Service
addresses for thousands of ModelDeployments (three Services each)."""

from __future__ import annotations

import ipaddress

from tests.cluster.node import SLOTS, NodeNetwork


def test_routed_slots_have_service_ranges_that_never_overlap():
    ranges = [ipaddress.ip_network(NodeNetwork(slot).service_cidr) for slot in range(SLOTS)]
    assert all(a.prefixlen == 20 for a in ranges)
    assert not any(a.overlaps(b) for i, a in enumerate(ranges) for b in ranges[i + 1 :])


def test_a_cluster_without_a_real_node_has_room_for_five_thousand_modeldeployments():
    services = ipaddress.ip_network(NodeNetwork(0, routed=False).service_cidr)
    # The first address is the `kubernetes` Service's; every ModelDeployment owns three.
    assert services.num_addresses - 2 - 1 >= 3 * 5000


def test_the_kubernetes_service_address_lies_in_the_service_range():
    for network in (NodeNetwork(3), NodeNetwork(0, routed=False)):
        assert ipaddress.ip_address(network.kubernetes_service_ip) in ipaddress.ip_network(network.service_cidr)


def test_kwok_pods_of_one_slot_fit_five_thousand_and_stay_inside_its_routed_pod_range():
    network = NodeNetwork(5)
    kwok, routed = ipaddress.ip_network(network.kwok_cidr), ipaddress.ip_network(network.pods_route)
    assert kwok.subnet_of(routed) and kwok.num_addresses >= 5000
    assert not kwok.overlaps(ipaddress.ip_network(network.pod_subnet))
