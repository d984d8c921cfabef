use dataflow::{Catalog, Product, Supplier};
use rust_decimal::Decimal;
use tokio_postgres::Client;

use crate::SinkError;

/// What `seed_catalog` inserted; rows that already existed are left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedOutcome {
    /// New suppliers.
    pub suppliers: u64,
    /// New products.
    pub products: u64,
    /// New opening `inventory` rows.
    pub inventory: u64,
}

/// Inserts the catalog's suppliers, products and opening stock, in one
/// transaction. Existing rows are never overwritten and stock is never reset,
/// so running it twice changes nothing.
pub async fn seed_catalog(client: &mut Client, catalog: &Catalog) -> Result<SeedOutcome, SinkError> {
    let tx = client.transaction().await.map_err(SinkError::pg("begin seed"))?;
    let s = &catalog.suppliers;
    let ids: Vec<&str> = s.iter().map(|x| x.supplier_id.as_str()).collect();
    let names: Vec<&str> = s.iter().map(|x| x.name.as_str()).collect();
    let contacts: Vec<&str> = s.iter().map(|x| x.contact.as_str()).collect();
    let suppliers = tx
        .execute(
            "INSERT INTO suppliers (supplier_id, name, contact) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (supplier_id) DO NOTHING",
            &[&ids, &names, &contacts],
        )
        .await
        .map_err(SinkError::pg("insert suppliers"))?;

    let p = &catalog.products;
    let ids: Vec<&str> = p.iter().map(|x| x.product_id.as_str()).collect();
    let names: Vec<&str> = p.iter().map(|x| x.name.as_str()).collect();
    let cats: Vec<&str> = p.iter().map(|x| x.category.as_str()).collect();
    let prices: Vec<Decimal> = p.iter().map(|x| x.price).collect();
    let levels: Vec<i32> = p.iter().map(|x| x.reorder_level).collect();
    let sups: Vec<Option<&str>> = p.iter().map(|x| x.supplier_id.as_deref()).collect();
    let stock: Vec<i64> = p.iter().map(|x| x.quantity_on_hand).collect();
    let products = tx
        .execute(
            "INSERT INTO products (product_id, name, category, price, reorder_level, supplier_id) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::int[], $6::text[]) \
             ON CONFLICT (product_id) DO NOTHING",
            &[&ids, &names, &cats, &prices, &levels, &sups],
        )
        .await
        .map_err(SinkError::pg("insert products"))?;
    let inventory = tx
        .execute(
            "INSERT INTO inventory (product_id, quantity_on_hand, opening_quantity) \
             SELECT id, q, q FROM unnest($1::text[], $2::bigint[]) AS t(id, q) \
             ON CONFLICT (product_id) DO NOTHING",
            &[&ids, &stock],
        )
        .await
        .map_err(SinkError::pg("insert inventory"))?;
    tx.commit().await.map_err(SinkError::pg("commit seed"))?;
    Ok(SeedOutcome { suppliers, products, inventory })
}

/// Reads the whole catalog with current stock (0 where a product has no
/// inventory row), ordered by id.
pub async fn load_catalog(client: &Client) -> Result<Catalog, SinkError> {
    let rows = client
        .query(
            "SELECT p.product_id, p.name, p.category, p.price, p.reorder_level, p.supplier_id, \
                    COALESCE(i.quantity_on_hand, 0) \
             FROM products p LEFT JOIN inventory i USING (product_id) ORDER BY p.product_id",
            &[],
        )
        .await
        .map_err(SinkError::pg("load products"))?;
    let products = rows
        .iter()
        .map(|r| Product {
            product_id: r.get(0),
            name: r.get(1),
            category: r.get(2),
            price: r.get(3),
            reorder_level: r.get(4),
            supplier_id: r.get(5),
            quantity_on_hand: r.get(6),
        })
        .collect();
    let rows = client
        .query("SELECT supplier_id, name, contact FROM suppliers ORDER BY supplier_id", &[])
        .await
        .map_err(SinkError::pg("load suppliers"))?;
    let suppliers =
        rows.iter().map(|r| Supplier { supplier_id: r.get(0), name: r.get(1), contact: r.get(2) }).collect();
    Ok(Catalog { products, suppliers })
}
