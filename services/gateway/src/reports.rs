//! Sales reports (role admin), from the reports service.

use comb_kit::grpc::Answer;
use std::collections::BTreeMap;

use axum::Json;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use comb_contracts::reports::v1 as proto;
use comb_contracts::reports::v1::reports_client::ReportsClient;
use comb_kit::Problem;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::GatewayState;
use crate::auth::Admin;
use crate::catalog::Money;
use crate::openapi::Problem as ProblemDoc;
use crate::openapi::responses::{NotAdmin, Unauthorized};
use crate::params::ApiQuery;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// First day, YYYY-MM-DD (inclusive); no bound without it.
    from: Option<String>,
    /// Last day, YYYY-MM-DD (inclusive); no bound without it.
    to: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DaySales {
    pub date: String,
    pub orders: i64,
    pub revenue: Money,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopProduct {
    pub product_id: String,
    pub title: String,
    pub quantity: i64,
    pub revenue: Money,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SalesReport {
    pub days: Vec<DaySales>,
    pub top_products: Vec<TopProduct>,
    /// Cancelled orders by reason.
    pub cancellations: BTreeMap<String, i64>,
}

async fn fetch(state: &GatewayState, params: RangeParams) -> Result<proto::SalesReport, Problem> {
    ReportsClient::new(state.reports.channel())
        .sales(proto::SalesRequest {
            from: params.from.unwrap_or_default(),
            to: params.to.unwrap_or_default(),
        })
        .await
        .answered_by(&state.reports)
}

/// Sales per day, top products and cancellations by reason.
#[utoipa::path(
    get,
    path = "/api/v1/admin/reports/sales",
    tag = "admin",
    security(("bearer" = [])),
    params(RangeParams),
    responses(
        (status = 200, description = "The report", body = SalesReport),
        (status = 400, description = "A date is not YYYY-MM-DD, or to is before from", body = ProblemDoc, content_type = "application/problem+json"),
        Unauthorized,
        NotAdmin,
        (status = 503, description = "Reports are unavailable", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn sales(
    State(state): State<GatewayState>,
    _admin: Admin,
    ApiQuery(params): ApiQuery<RangeParams>,
) -> Result<Json<SalesReport>, Problem> {
    let report = fetch(&state, params).await?;
    let money = |amount_minor| Money {
        amount_minor,
        currency: report.currency.clone(),
    };
    Ok(Json(SalesReport {
        days: report
            .days
            .iter()
            .map(|day| DaySales {
                date: day.date.clone(),
                orders: day.orders,
                revenue: money(day.revenue_minor),
            })
            .collect(),
        top_products: report
            .top_products
            .iter()
            .map(|product| TopProduct {
                product_id: product.product_id.clone(),
                title: product.title.clone(),
                quantity: product.quantity,
                revenue: money(product.revenue_minor),
            })
            .collect(),
        cancellations: report
            .cancellations
            .iter()
            .map(|cancellation| (cancellation.reason.clone(), cancellation.count))
            .collect(),
    }))
}

/// Sales per day as CSV: `date,orders,revenue_minor,currency`.
#[utoipa::path(
    get,
    path = "/api/v1/admin/reports/sales.csv",
    tag = "admin",
    security(("bearer" = [])),
    params(RangeParams),
    responses(
        (status = 200, description = "One line per day", body = String, content_type = "text/csv"),
        (status = 400, description = "A date is not YYYY-MM-DD, or to is before from", body = ProblemDoc, content_type = "application/problem+json"),
        Unauthorized,
        NotAdmin,
    )
)]
pub async fn sales_csv(
    State(state): State<GatewayState>,
    _admin: Admin,
    ApiQuery(params): ApiQuery<RangeParams>,
) -> Result<Response, Problem> {
    let report = fetch(&state, params).await?;
    let mut csv = String::from("date,orders,revenue_minor,currency\n");
    for day in &report.days {
        csv.push_str(&format!(
            "{},{},{},{}\n",
            day.date, day.orders, day.revenue_minor, report.currency
        ));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"sales.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}
