//! FindCoordinator (every group's coordinator is this node; batched keys from v4) and
//! InitProducerId (idempotent producers only: a transactional id is refused as Kafka refuses
//! it when transactions are not allowed).

use std::sync::Arc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;

const GROUP: i8 = 0;

fn answer(broker: &Broker, key_type: i8) -> (i16, Option<String>) {
    match key_type {
        GROUP => (0, None),
        1 => (
            ResponseError::TransactionalIdAuthorizationFailed.code(),
            Some("transactions are not supported by riverbed serve".into()),
        ),
        k => {
            broker.metrics.error(ApiKey::FindCoordinator);
            (
                ResponseError::InvalidRequest.code(),
                Some(format!("coordinator key type {k} is not served")),
            )
        }
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    let node = BrokerId(broker.config.node_id);
    let host = StrBytes::from_string(broker.host());
    if version < 4 {
        let (code, msg) = answer(broker, req.key_type);
        resp.error_code = code;
        resp.error_message = msg.map(StrBytes::from_string);
        if code == 0 {
            resp.node_id = node;
            resp.host = host;
            resp.port = broker.port();
        } else {
            resp.node_id = BrokerId(-1);
            resp.port = -1;
        }
        return resp;
    }
    for key in req.coordinator_keys {
        let (code, msg) = answer(broker, req.key_type);
        let mut c = Coordinator::default();
        c.key = key;
        c.error_code = code;
        c.error_message = msg.map(StrBytes::from_string);
        if code == 0 {
            c.node_id = node;
            c.host = host.clone();
            c.port = broker.port();
        } else {
            c.node_id = BrokerId(-1);
            c.port = -1;
        }
        resp.coordinators.push(c);
    }
    resp
}

pub fn init_producer_id(
    broker: &Arc<Broker>,
    req: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        broker.metrics.error(ApiKey::InitProducerId);
        resp.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return resp;
    }
    // KIP-360: a producer that knows its id asks for a bumped epoch.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        resp.producer_id = req.producer_id;
        resp.producer_epoch = req.producer_epoch + 1;
        return resp;
    }
    match broker.producers.allocate() {
        Ok(id) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Err(why) => {
            eprintln!("riverbed serve: cannot hand out a producer id: {why}");
            broker.metrics.error(ApiKey::InitProducerId);
            resp.error_code = ResponseError::CoordinatorNotAvailable.code();
        }
    }
    resp
}
