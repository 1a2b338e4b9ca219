//! A whole HTTP answer, as the client port's HTTP face (`http_face`) and
//! its JSON gateway (`gateway`) give them.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use tonic::body::Body;

/// A whole answer: a status, a content type and a body.
pub(crate) fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Body::new(http_body_util::Full::new(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}
