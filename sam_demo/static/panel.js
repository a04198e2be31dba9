// A part of the page drawn from the prompter's views (gr.HTML's js_on_load; props.part names it:
// "status", "legend" or "exports"). The prompter dispatches "sam-demo:view" with the HTML of each
// part whenever it shows a view, so a click's answer updates them together with the mask.
const part = props.part;
document.addEventListener('sam-demo:view', (event) => {
  const html = event.detail && event.detail[part];
  if (typeof html === 'string') element.innerHTML = html;
});
