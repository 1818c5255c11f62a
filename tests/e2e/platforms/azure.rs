//! Azure Monitor Logs Ingestion (Microsoft Sentinel): the receiver checked against its
//! documentation, and the `azure_monitor_logs` sink of the real agent against it.

mod receiver;
