//! skymap-probe: the eBPF node probe. Filled by the node-probe issue; it
//! will stream `skymap_proto::v1::FlowBatch`es to the relay.
