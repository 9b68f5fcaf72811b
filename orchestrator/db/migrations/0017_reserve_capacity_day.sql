-- reserve: the node's day each reservation's shipment counts against (`reserve_node_load`), so a
-- shipment that is given back whole before it ships gives its slot of the day back too. NULL on
-- reservations made before this column: their shipments keep their slot.
ALTER TABLE reserve_reservations ADD COLUMN capacity_day date;
